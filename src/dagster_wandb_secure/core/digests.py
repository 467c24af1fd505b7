"""The payload digest registry: every digest algorithm an envelope or manifest may name, in one place.

Envelope headers (``digest_alg`` plus ``payload_<alg>``), manifest entries (``<alg>`` for plain
files, ``envelope_payload_<alg>`` for envelopes) and the audit all look algorithms up here; no
other module branches on an algorithm's name. Both algorithms give 32 bytes, written as 64
lowercase hex digits. ``blake3`` is the ``blake3`` package (the reference implementation's
bindings), hashing large inputs on every core (on rayon's global pool; a forked child of a
process that started it hashes on one thread: ``_threads_usable``); ``sha256`` is ``hashlib`` (FIPS environments).
Which algorithms a *reader* accepts is the policy's allow-list (``Policy.digest_algorithms``).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import blake3 as _blake3

from .fsutil import open_no_follow

__all__ = [
    "DEFAULT_DIGEST",
    "DIGESTS",
    "ENVELOPE_FIELDS",
    "FILE_FIELDS",
    "HEX_DIGEST_RE",
    "Digest",
    "Hasher",
    "UnknownDigestError",
    "digest_bytes",
    "digest_file",
    "get_digest",
]

# From this many bytes per update, BLAKE3 spreads the work over every core (below it, starting
# threads costs more than it saves).
THREADED_UPDATE = 1 << 20
READ_CHUNK = 8 << 20
HEX_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


class Hasher(Protocol):
    def update(self, data: Any, /) -> Any: ...
    def hexdigest(self) -> str: ...


class UnknownDigestError(ValueError):
    """A digest algorithm name not in the registry (callers turn it into a typed error)."""


@dataclass(frozen=True)
class Digest:
    """One digest algorithm: its name, how to make a hasher, and its output size."""

    name: str
    factory: Callable[[int], Hasher]  # argument: the expected input size (thread choice)
    size: int = 32

    def new(self, size_hint: int = 0) -> Hasher:
        return self.factory(size_hint)

    @property
    def header_field(self) -> str:
        """The envelope header key holding the payload's hex digest."""
        return f"payload_{self.name}"

    @property
    def file_field(self) -> str:
        """The manifest entry key holding a plain file's hex digest."""
        return self.name

    @property
    def envelope_field(self) -> str:
        """The manifest entry key holding an envelope's payload digest."""
        return f"envelope_payload_{self.name}"


def _sha256(_size: int) -> Hasher:
    return hashlib.sha256()


# The process whose rayon global pool ``max_threads=AUTO`` runs on (None: not started yet). That
# pool is started once per process and never again, and after a fork its threads do not exist in
# the child: a child's AUTO update queues its work on a pool without threads and waits forever
# (the audit's forked workers, ``maintenance/audit.py``, after any large hash in the parent). A
# forked child of a process that started the pool hashes on its own thread instead.
_POOL_PID: list[int] = []


def _threads_usable() -> bool:
    """Whether this process may hash on rayon's global pool (it started it, or none is
    inherited)."""
    pid = os.getpid()
    if not _POOL_PID:
        _POOL_PID.append(pid)  # two threads racing here append the same pid
    return _POOL_PID[0] == pid


def _blake3_hasher(size: int) -> Hasher:
    if size >= THREADED_UPDATE and _threads_usable():
        return _blake3.blake3(max_threads=_blake3.blake3.AUTO)
    return _blake3.blake3()


DIGESTS: dict[str, Digest] = {
    "sha256": Digest("sha256", _sha256),
    "blake3": Digest("blake3", _blake3_hasher),
}
DEFAULT_DIGEST = "blake3"
# manifest entry key -> digest algorithm, for plain files and for payload envelopes
FILE_FIELDS = {d.file_field: d.name for d in DIGESTS.values()}
ENVELOPE_FIELDS = {d.envelope_field: d.name for d in DIGESTS.values()}


def get_digest(name: Any) -> Digest:
    """The registry entry for ``name``; ``UnknownDigestError`` for anything else."""
    found = DIGESTS.get(name) if isinstance(name, str) else None
    if found is None:
        shown = str(name)[:40]
        raise UnknownDigestError(
            f"digest algorithm {shown!r} is unknown (known: {', '.join(sorted(DIGESTS))})"
        )
    return found


def digest_bytes(name: str, data: Any) -> str:
    """Hex digest of a bytes-like object under algorithm ``name``."""
    view = memoryview(data)
    hasher = get_digest(name).new(view.nbytes)
    hasher.update(view)
    return hasher.hexdigest()


def digest_file(name: str, path: str | Path) -> tuple[str, int]:
    """Hex digest and size of the file at ``path`` (symlinks refused), streamed in chunks."""
    with open_no_follow(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        hasher = get_digest(name).new(size)
        buf = bytearray(min(READ_CHUNK, max(size, 1)))
        view = memoryview(buf)
        total = 0
        while True:
            n = fh.readinto(view)
            if not n:
                break
            hasher.update(view[:n])
            total += n
    return hasher.hexdigest(), total
