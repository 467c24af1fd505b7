"""Signatures this process made itself: a bounded, process-local memo that lets ``KeyStore.verify``
skip an Ed25519 verification it can prove redundant (SECURITY.md, "Own signatures").

An entry is ``(alg, kid, fingerprint, message) -> signature``, added by an Ed25519 signer
(``algorithms._Ed25519Signer``) right after it signed ``message`` with a private key whose public
half has ``fingerprint`` (computed from that very key object when the signer was made). When a
reader's key record has the same algorithm, key id and fingerprint, the public key it would verify
with is that key's public half (the key store checks every loaded public key against the record's
fingerprint), so ``Verify(public, message, signature)`` is true for exactly the signature stored
here: an exact match (the full message bytes, the full signature, compared with
``hmac.compare_digest``) proves what the verification would have proven. Anything else (another
message, another signature, another key id, algorithm or fingerprint) is a miss, and the caller
verifies as usual. Every other check of the key store (lookup, binding, status, end date, key file)
runs before the memo is consulted, on every call.

The memo only ever holds what this process signed (nothing a reader is handed is ever added), is
bounded in entries and bytes (oldest first out), takes a lock for writes (a lookup is one dict
read), and is inherited by a forked child as it is: its entries stay true facts about the same key
material there.
"""

from __future__ import annotations

import hmac
import os
import threading

__all__ = ["MAX_ENTRIES", "MAX_MESSAGE_BYTES", "MAX_TOTAL_BYTES", "OwnSignatures", "OWN_SIGNATURES"]

MAX_ENTRIES = 1024
MAX_MESSAGE_BYTES = 16 << 10  # a longer signed message (a huge header) is not remembered
MAX_TOTAL_BYTES = 2 << 20  # the messages held, in all

_Key = tuple[str, str, str, bytes]


class OwnSignatures:
    """The bounded memo (module docstring)."""

    def __init__(
        self,
        max_entries: int = MAX_ENTRIES,
        max_total_bytes: int = MAX_TOTAL_BYTES,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self._map: dict[_Key, bytes] = {}
        self._bytes = 0
        self._mutex = threading.Lock()
        self.max_entries = max_entries
        self.max_total_bytes = max_total_bytes
        self.max_message_bytes = max_message_bytes

    def add(self, alg: str, kid: str, fingerprint: str, message: bytes, signature: bytes) -> None:
        """Remember that this process signed ``message`` with key ``kid`` (``fingerprint``)."""
        if type(message) is not bytes or len(message) > self.max_message_bytes:
            return
        key = (alg, kid, fingerprint, message)
        with self._mutex:
            if key in self._map:
                self._map[key] = bytes(signature)
                return
            self._map[key] = bytes(signature)
            self._bytes += len(message)
            while len(self._map) > self.max_entries or self._bytes > self.max_total_bytes:
                oldest = next(iter(self._map))
                del self._map[oldest]
                self._bytes -= len(oldest[3])

    def confirms(
        self, alg: str, kid: str, fingerprint: str, message: bytes, signature: bytes
    ) -> bool:
        """True only when this process signed exactly ``message`` with exactly this key and got
        exactly ``signature``."""
        if type(message) is not bytes:
            return False
        want = self._map.get((alg, kid, fingerprint, message))
        return want is not None and hmac.compare_digest(want, bytes(signature))

    def clear(self) -> None:
        with self._mutex:
            self._map.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._map)

    @property
    def total_bytes(self) -> int:
        return self._bytes


    def _after_fork_in_child(self) -> None:
        # another thread of the parent may have held the lock at fork: the child gets a new one
        self._mutex = threading.Lock()


OWN_SIGNATURES = OwnSignatures()
os.register_at_fork(after_in_child=OWN_SIGNATURES._after_fork_in_child)
