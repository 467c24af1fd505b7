"""Precompiled header templates (``core/header_template.py``, issue 16 "Small objects"): the bytes
a template renders are the canonical encoding, what a reader template matches is decided exactly
as the full strict path decides it (same verdict, same error), and no template or verifier memo
lets an operation skip a key-store check after the store changed."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dagster_wandb_secure.core import canonical, header_template
from dagster_wandb_secure.core.envelope import (
    PREAMBLE,
    PREAMBLE_SIZE,
    TAG,
    seal,
    unseal,
    verify_bytes,
)
from dagster_wandb_secure.core.errors import (
    ContextMismatchError,
    ExpiredKeyError,
    NoSigningKeyError,
    RevokedKeyError,
    SecureArtifactError,
)
from dagster_wandb_secure.core.keys import KeyStore
from kit.counting import count_calls

CTX = {"artifact": "small", "type": "dataset"}
OBJ = {"name": "daily-metrics", "rows": 1234, "columns": [f"col_{i}" for i in range(24)]}


def _verdict(data: bytes, ks: KeyStore) -> tuple[str, str] | Any:
    try:
        return ("ok", repr(unseal(data, key_store=ks, expected_context=CTX)))
    except SecureArtifactError as exc:  # the reader's clock, quoted by some errors, moves on
        return (type(exc).__name__, re.sub(r"clock [0-9T:.+-]+", "clock", str(exc)))


def _resign(data: bytes, ks: KeyStore, header: bytes) -> bytes:
    """``data`` with its header replaced by ``header``, signed again by the store's primary
    (what a writer holding the key could produce: the reader must still apply every rule)."""
    _m, version, flags, old_len, sig_len = PREAMBLE.unpack(data[:PREAMBLE_SIZE])
    payload = data[PREAMBLE_SIZE + old_len + sig_len :]
    preamble = PREAMBLE.pack(_m, version, flags, len(header), sig_len)
    signature = ks.signer().sign(TAG + preamble + header)
    return preamble + header + signature + payload


@pytest.mark.parametrize("digest_alg", ["blake3", "sha256"])
def test_a_rendered_header_is_the_canonical_encoding(key_store: KeyStore, digest_alg: str) -> None:
    header_template.clear()
    data = seal(OBJ, key_store=key_store, context=CTX, record=False, digest_alg=digest_alg)
    header, _ = verify_bytes(data, key_store=key_store)
    assert canonical.encode_shaped(header.as_dict()) == header.header_bytes
    again = seal(OBJ, key_store=key_store, context=CTX, record=False, digest_alg=digest_alg)
    header2, _ = verify_bytes(again, key_store=key_store)  # the template path on both sides
    assert canonical.encode_shaped(header2.as_dict()) == header2.header_bytes
    assert canonical.decode(header2.header_bytes) == header2.as_dict()


def test_every_single_byte_change_of_the_header_is_refused_as_without_templates(
    key_store: KeyStore,
) -> None:
    data = seal(OBJ, key_store=key_store, context=CTX, record=False)
    _m, _v, _f, header_len, _s = PREAMBLE.unpack(data[:PREAMBLE_SIZE])
    for pos in range(PREAMBLE_SIZE, PREAMBLE_SIZE + header_len):
        for new in {data[pos] ^ 1, ord("0"), ord("a"), ord('"')} - {data[pos]}:
            bad = data[:pos] + bytes([new]) + data[pos + 1 :]
            header_template.clear()
            cold = _verdict(bad, key_store)  # the full strict path only
            unseal(data, key_store=key_store, expected_context=CTX)  # the template is known
            warm = _verdict(bad, key_store)
            assert cold[0] != "ok" and warm == cold, (pos, new)


@pytest.mark.parametrize(
    "edit",
    [
        lambda h: h.replace(b'"payload_length":', b'"payload_length":0', 1),  # leading zero
        lambda h: h.replace(b'"payload_length":', b'"payload_length":-', 1),
        lambda h: h.replace(b'"signed_at":"2', b'"signed_at":"\xd9\xa2', 1),  # Arabic-Indic digit
        lambda h: h[: h.index(b'"signed_at":"') + 18] + b"13" + h[h.index(b'"signed_at":"') + 20 :],
        lambda h: h.replace(b'"signed_at":', b'"signed_at": ', 1),
        lambda h: h[:-1] + b',"extra":1}',
    ],
)
def test_a_signed_header_of_a_known_shape_but_not_canonical_is_refused_as_before(
    key_store: KeyStore, edit: Any
) -> None:
    data = seal(OBJ, key_store=key_store, context=CTX, record=False)
    _m, _v, _f, header_len, _s = PREAMBLE.unpack(data[:PREAMBLE_SIZE])
    header = data[PREAMBLE_SIZE : PREAMBLE_SIZE + header_len]
    forged = _resign(data, key_store, edit(header))
    header_template.clear()
    cold = _verdict(forged, key_store)
    unseal(data, key_store=key_store, expected_context=CTX)
    assert header_template.reader_template(header) is not None
    assert cold[0] != "ok" and _verdict(forged, key_store) == cold


def test_a_header_handed_out_is_a_copy_of_the_template(key_store: KeyStore) -> None:
    data = seal(OBJ, key_store=key_store, context=CTX, record=False)
    unseal(data, key_store=key_store, expected_context=CTX)
    header, _ = verify_bytes(data, key_store=key_store, expected_context=CTX)
    header.context["artifact"] = "other"  # type: ignore[index]
    header.serializer_params["framing"] = "inband"  # type: ignore[index]
    assert unseal(data, key_store=key_store, expected_context=CTX) == OBJ
    with pytest.raises(ContextMismatchError):
        unseal(data, key_store=key_store, expected_context={"artifact": "other"})


def test_a_warm_template_skips_no_key_store_check(tmp_path: Path, monkeypatch: Any) -> None:
    ks = KeyStore.open(tmp_path / "keys")
    kid = ks.generate("hmac-sha256")
    data = seal(OBJ, key_store=ks, context=CTX, record=False)
    assert unseal(data, key_store=ks, expected_context=CTX) == OBJ  # template + memo warm
    resolved = count_calls(monkeypatch, KeyStore, "_resolve_verifier")
    decodes = count_calls(monkeypatch, canonical, "decode")
    for _ in range(3):
        assert unseal(seal(OBJ, key_store=ks, context=CTX, record=False), key_store=ks) == OBJ
    assert (len(resolved), len(decodes)) == (0, 0)  # the fast path, nothing resolved again
    other = KeyStore.open(tmp_path / "keys")  # another handle edits the store
    other.rotate("hmac-sha256", grace=timedelta(days=1))  # a new primary: keystore.json replaced
    assert unseal(data, key_store=ks, expected_context=CTX) == OBJ  # old primary verifies
    assert len(resolved) == 1  # ... decided from the new parse
    with pytest.raises(NoSigningKeyError):
        seal(OBJ, key_store=ks, context=CTX, record=False, key_id=kid)  # no longer primary
    other.retire(kid)
    with pytest.raises(ExpiredKeyError):
        unseal(data, key_store=ks, expected_context=CTX)
    assert len(decodes) == 0  # refused on the template path, by the key store's own check
    other.revoke(kid, "test")
    with pytest.raises(RevokedKeyError):
        unseal(data, key_store=ks, expected_context=CTX)


def test_an_env_key_loaded_later_is_seen_by_the_verifier_memo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = KeyStore.open(tmp_path / "writer")
    writer.generate("hmac-sha256")
    secret = writer.export_secret(writer.primary().kid)
    reader = KeyStore.open(tmp_path / "reader")
    monkeypatch.setenv("DWS_TEST_KEY", secret)
    env_writer = KeyStore.open(tmp_path / "env-writer")
    env_writer.load_env_key("DWS_TEST_KEY")
    data = seal(OBJ, key_store=env_writer, context=CTX, record=False)
    with pytest.raises(SecureArtifactError):
        unseal(data, key_store=reader, expected_context=CTX)  # unknown here: memo not filled
    reader.load_env_key("DWS_TEST_KEY")
    assert unseal(data, key_store=reader, expected_context=CTX) == OBJ


def test_templates_stay_bounded(key_store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(header_template, "MAX_TEMPLATES", 4)
    header_template.clear()
    for i in range(10):
        ctx = {"artifact": f"a{i}"}
        data = seal(OBJ, key_store=key_store, context=ctx, record=False)
        assert unseal(data, key_store=key_store, expected_context=ctx) == OBJ
        assert unseal(data, key_store=key_store, expected_context=ctx) == OBJ
    assert len(header_template._READER._map) <= 4 and len(header_template._WRITER._map) <= 4


def test_a_file_of_a_known_shape_is_read_without_a_json_pass(
    key_store: KeyStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster_wandb_secure.core.envelope import seal_to, unseal_from

    target = tmp_path / "obj.pickle"
    seal_to(target, OBJ, key_store=key_store, context=CTX, record=False)
    assert unseal_from(target, key_store=key_store, expected_context=CTX) == OBJ
    decodes = count_calls(monkeypatch, canonical, "decode")
    seal_to(target, OBJ, key_store=key_store, context=CTX, record=False)
    assert unseal_from(target, key_store=key_store, expected_context=CTX) == OBJ
    assert decodes == []
    data = target.read_bytes()
    bad = data.replace(b'"payload_length":', b'"payload_length":0', 1)
    target.write_bytes(bad)
    with pytest.raises(SecureArtifactError, match="header rejected"):
        unseal_from(target, key_store=key_store, expected_context=CTX)
    assert len(decodes) == 1  # not the template's: the strict parse decided
