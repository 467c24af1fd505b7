"""Own signatures (SECURITY.md, "Own signatures"): an Ed25519 verification is skipped only where
it is provably redundant - the process's memo holds exactly these signed bytes and this
signature for exactly this key, or the reader holds the private key and re-signing gives exactly
this signature - and every other check stays as strict: tampering after a memo hit, revocation
by another process, a changed key, a forged signature are all still refused."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

from dagster_wandb_secure.core import algorithms, keys_memo
from dagster_wandb_secure.core.envelope import seal, unseal
from dagster_wandb_secure.core.envelope_format import PREAMBLE, PREAMBLE_SIZE, TAG
from dagster_wandb_secure.core.errors import (
    KeyStoreError,
    RevokedKeyError,
    SecureArtifactError,
    TamperedPayloadError,
)
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.keys_memo import OWN_SIGNATURES, OwnSignatures
from kit.counting import Call, count_calls

CTX = {"artifact": "own", "type": "dataset"}
OBJ = {"name": "daily-metrics", "rows": 1234, "columns": [f"col_{i}" for i in range(24)]}


@pytest.fixture
def ed_store(tmp_path: Path) -> KeyStore:
    ks = KeyStore.open(tmp_path / "keys")
    ks.generate("ed25519")
    return ks


@pytest.fixture
def verifies(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Every real Ed25519 verification."""
    return count_calls(monkeypatch, algorithms.Ed25519, "verify")


@pytest.fixture(autouse=True)
def fresh_memo() -> None:
    OWN_SIGNATURES.clear()


def _parts(data: bytes) -> tuple[bytes, bytes, int]:
    """(signed message, signature, payload offset) of an envelope."""
    _m, _v, _f, header_len, sig_len = PREAMBLE.unpack(data[:PREAMBLE_SIZE])
    head_end = PREAMBLE_SIZE + header_len
    return TAG + data[:head_end], data[head_end : head_end + sig_len], head_end + sig_len


def test_a_process_reading_what_it_sealed_skips_the_verification(
    ed_store: KeyStore, verifies: list[Call]
) -> None:
    data = seal(OBJ, key_store=ed_store, context=CTX, record=False)
    assert unseal(data, key_store=ed_store, expected_context=CTX) == OBJ
    assert verifies == []
    # a reader in another key store object (no signer of its own) uses the memo too
    other = KeyStore.open(ed_store.path)
    assert unseal(data, key_store=other, expected_context=CTX) == OBJ
    assert verifies == []


def test_tampering_after_a_memo_hit_is_still_refused(
    ed_store: KeyStore, verifies: list[Call]
) -> None:
    data = seal(OBJ, key_store=ed_store, context=CTX, record=False)
    assert unseal(data, key_store=ed_store, expected_context=CTX) == OBJ  # a memo hit
    message, signature, offset = _parts(data)
    reader = KeyStore.open(ed_store.path)  # holds no signer: only the memo could skip
    # a flipped bit in the signature: not the memo's signature, so verified (and refused)
    bad_sig = bytearray(data)
    bad_sig[offset - 1] ^= 1
    with pytest.raises(TamperedPayloadError):
        unseal(bytes(bad_sig), key_store=reader, expected_context=CTX)
    assert len(verifies) == 1
    # a changed header byte (the context): not the memo's message
    i = data.index(b'"own"')
    bad_head = data[:i] + b'"owo"' + data[i + 5 :]
    with pytest.raises(SecureArtifactError):
        unseal(bad_head, key_store=reader, expected_context={"type": "dataset"})
    # a changed payload byte: the memo hit stands, the digest check does not
    bad_payload = bytearray(data)
    bad_payload[-3] ^= 0xFF
    with pytest.raises(TamperedPayloadError):
        unseal(bytes(bad_payload), key_store=reader, expected_context=CTX)
    # the expected context is still checked after a hit
    with pytest.raises(SecureArtifactError):
        unseal(data, key_store=reader, expected_context={"artifact": "other"})
    assert reader.verify(
        kid=ed_store.primary().kid, alg="ed25519", message=message, signature=signature,
        signed_at=reader.clock(),
    )


def _revoke(path: str, kid: str) -> None:
    KeyStore.open(path).revoke(kid, "revoked by another process")


def test_a_revocation_by_another_process_wins_over_a_memo_entry(ed_store: KeyStore) -> None:
    kid = ed_store.primary().kid
    data = seal(OBJ, key_store=ed_store, context=CTX, record=False)
    assert unseal(data, key_store=ed_store, expected_context=CTX) == OBJ
    assert len(OWN_SIGNATURES) == 1
    proc = multiprocessing.get_context("spawn").Process(
        target=_revoke, args=(str(ed_store.path), kid)
    )
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    with pytest.raises(RevokedKeyError):
        unseal(data, key_store=ed_store, expected_context=CTX)


def test_the_memo_is_never_consulted_for_another_key(tmp_path: Path, verifies: list[Call]) -> None:
    """Same key id in another store, another key: its fingerprint differs, so the memo misses,
    and the real verification refuses the signature."""
    mine = KeyStore.open(tmp_path / "mine")
    kid = mine.generate("ed25519")
    data = seal(OBJ, key_store=mine, context=CTX, record=False)
    message, signature, _ = _parts(data)
    record = mine.primary()
    assert OWN_SIGNATURES.confirms("ed25519", kid, record.fingerprint, message, signature)
    assert not OWN_SIGNATURES.confirms("ed25519", kid, "0" * 64, message, signature)
    assert not OWN_SIGNATURES.confirms("hmac-sha256", kid, record.fingerprint, message, signature)
    assert not OWN_SIGNATURES.confirms("ed25519", kid + "x", record.fingerprint, message, signature)
    assert not OWN_SIGNATURES.confirms(
        "ed25519", kid, record.fingerprint, message, bytes(64)
    )
    assert not OWN_SIGNATURES.confirms(
        "ed25519", kid, record.fingerprint, message + b" ", signature
    )
    # a store whose record for this kid is another key: the memo misses and the verify refuses
    theirs = KeyStore.open(tmp_path / "theirs")
    other_kid = theirs.generate("ed25519")
    forged = data.replace(kid.encode(), other_kid.encode()) if len(kid) == len(other_kid) else None
    if forged is not None:
        with pytest.raises(SecureArtifactError):
            unseal(forged, key_store=theirs, expected_context=CTX)
        assert len(verifies) == 1


def test_the_memo_is_bounded_in_entries_and_bytes() -> None:
    memo = OwnSignatures(max_entries=8, max_total_bytes=1000, max_message_bytes=300)
    for i in range(50):
        memo.add("ed25519", "k", "f", b"m%03d" % i + b"." * 96, bytes(64))
    assert len(memo) == 8
    assert memo.confirms("ed25519", "k", "f", b"m049" + b"." * 96, bytes(64))
    assert not memo.confirms("ed25519", "k", "f", b"m000" + b"." * 96, bytes(64))  # evicted
    for i in range(50):
        memo.add("ed25519", "k", "f", b"n%03d" % i + b"." * 250, bytes(64))
    assert memo.total_bytes <= 1000 and len(memo) == 3
    memo.add("ed25519", "k", "f", b"x" * 301, bytes(64))  # over the per-message cap
    assert not memo.confirms("ed25519", "k", "f", b"x" * 301, bytes(64))
    assert len(keys_memo.OWN_SIGNATURES) <= keys_memo.MAX_ENTRIES


def test_a_reader_holding_the_private_key_proves_by_signing_again(
    ed_store: KeyStore, verifies: list[Call], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = seal(OBJ, key_store=ed_store, context=CTX, record=False)
    OWN_SIGNATURES.clear()  # as in another process that signed with the same key
    made = count_calls(monkeypatch, algorithms._Ed25519Signer, "made")
    assert unseal(data, key_store=ed_store, expected_context=CTX) == OBJ
    assert len(made) == 1 and verifies == []
    # a forged signature: re-signing differs, and the real verification refuses it
    _message, _signature, offset = _parts(data)
    forged = data[: offset - 64] + os.urandom(64) + data[offset:]
    with pytest.raises(TamperedPayloadError):
        unseal(forged, key_store=ed_store, expected_context=CTX)
    assert len(verifies) == 1


def test_a_valid_signature_that_signing_again_does_not_reproduce_is_still_accepted(
    ed_store: KeyStore, verifies: list[Call], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mismatch proves nothing (a signature from a hedged signer elsewhere may differ): the
    real verification decides."""
    data = seal(OBJ, key_store=ed_store, context=CTX, record=False)
    OWN_SIGNATURES.clear()

    def different(self: Any, message: bytes, signature: bytes) -> bool:
        return False

    monkeypatch.setattr(algorithms._Ed25519Signer, "made", different)
    assert unseal(data, key_store=ed_store, expected_context=CTX) == OBJ
    assert len(verifies) == 1


def test_a_replaced_public_key_file_is_still_refused_after_a_memo_entry(
    ed_store: KeyStore, tmp_path: Path
) -> None:
    data = seal(OBJ, key_store=ed_store, context=CTX, record=False)
    record = ed_store.primary()
    other = KeyStore.open(tmp_path / "other")
    other_kid = other.generate("ed25519")
    mine = ed_store.path / "public" / f"{record.kid}.pub.pem"
    theirs = other.path / "public" / f"{other_kid}.pub.pem"
    mine.write_bytes(theirs.read_bytes())
    reader = KeyStore.open(ed_store.path)
    with pytest.raises(KeyStoreError, match="fingerprint mismatch"):
        unseal(data, key_store=reader, expected_context=CTX)


def _unseal_in_child(data: bytes, path: str, queue: Any) -> None:
    try:
        ok = unseal(data, key_store=KeyStore.open(path), expected_context=CTX) == OBJ
        queue.put((ok, len(OWN_SIGNATURES)))
    except BaseException as exc:  # pragma: no cover - reported to the parent
        queue.put((repr(exc), -1))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_inherits_true_entries_only(ed_store: KeyStore) -> None:
    data = seal(OBJ, key_store=ed_store, context=CTX, record=False)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_unseal_in_child, args=(data, str(ed_store.path), queue))
    proc.start()
    result = queue.get(timeout=60)
    proc.join(60)
    assert result == (True, 1)
