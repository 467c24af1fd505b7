"""Red team (session 6): the own-signature memo only ever proves what the verification would,
for exactly the key the reader's store binds to the key id. Another store of the same process
that binds the same key id to another key, or holds the same key revoked, gets no help from
the memo; a mutable message is never looked up (verified instead)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dagster_wandb_secure.core import algorithms
from dagster_wandb_secure.core.envelope import seal, unseal
from dagster_wandb_secure.core.envelope_format import PREAMBLE, PREAMBLE_SIZE, TAG
from dagster_wandb_secure.core.errors import (
    RevokedKeyError,
    SecureArtifactError,
    TamperedPayloadError,
)
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.keys_memo import OWN_SIGNATURES
from kit.counting import Call, count_calls

CTX = {"artifact": "red6", "type": "dataset"}
OBJ = {"rows": [1, 2, 3]}


@pytest.fixture(autouse=True)
def fresh_memo() -> None:
    OWN_SIGNATURES.clear()


@pytest.fixture
def verifies(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    return count_calls(monkeypatch, algorithms.Ed25519, "verify")


def _signed(tmp_path: Path) -> tuple[KeyStore, str, bytes]:
    mine = KeyStore.open(tmp_path / "mine")
    kid = mine.generate("ed25519")
    data = seal(OBJ, key_store=mine, context=CTX, record=False)
    assert len(OWN_SIGNATURES) == 1
    return mine, kid, data


def _parts(data: bytes) -> tuple[bytes, bytes]:
    _m, _v, _f, header_len, sig_len = PREAMBLE.unpack(data[:PREAMBLE_SIZE])
    head_end = PREAMBLE_SIZE + header_len
    return TAG + data[:head_end], data[head_end : head_end + sig_len]


def test_another_store_binding_the_same_kid_to_another_key_verifies_and_refuses(
    tmp_path: Path, verifies: list[Call]
) -> None:
    _mine, kid, data = _signed(tmp_path)
    stranger = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    theirs = KeyStore.open(tmp_path / "theirs")
    assert theirs.import_public(stranger, kid=kid) == kid
    # the very bytes the memo holds, under the very kid: still refused by the real verification
    with pytest.raises(TamperedPayloadError):
        unseal(data, key_store=theirs, expected_context=CTX)
    assert len(verifies) == 1


def test_the_same_key_revoked_in_another_store_is_refused_despite_the_memo(
    tmp_path: Path, verifies: list[Call]
) -> None:
    mine, kid, data = _signed(tmp_path)
    theirs = KeyStore.open(tmp_path / "theirs")
    assert theirs.import_public(mine.export_public(kid)) == kid
    assert unseal(data, key_store=theirs, expected_context=CTX) == OBJ  # a memo hit
    assert verifies == []
    theirs.revoke(kid, "compromised, says the other team")
    with pytest.raises(RevokedKeyError):
        unseal(data, key_store=theirs, expected_context=CTX)
    assert unseal(data, key_store=mine, expected_context=CTX) == OBJ  # the signer's own store


@pytest.mark.parametrize("wrap", [bytearray, memoryview])
def test_a_mutable_message_is_verified_never_looked_up(
    tmp_path: Path, verifies: list[Call], wrap: type
) -> None:
    mine, kid, data = _signed(tmp_path)
    message, signature = _parts(data)
    reader = KeyStore.open(mine.path)  # no signer cached: only the memo could skip
    got = reader.verify(
        kid=kid, alg="ed25519", message=wrap(bytearray(message)), signature=signature,
        signed_at=reader.clock(),
    )
    assert got.kid == kid and len(verifies) == 1


def test_a_memo_signature_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    mine, kid, data = _signed(tmp_path)
    message, signature = _parts(data)
    for bad in (signature + b"\0", signature[:-1]):
        with pytest.raises(SecureArtifactError):
            mine.verify(
                kid=kid, alg="ed25519", message=message, signature=bad, signed_at=mine.clock()
            )
