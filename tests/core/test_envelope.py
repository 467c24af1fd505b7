"""The signed envelope: round trips, and every core attack of SECURITY.md's attack catalogue (and
its "Verification procedure") ending in a typed error with nothing executed."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from dagster_wandb_secure.core import _envelope_read, canonical, envelope
from dagster_wandb_secure.core.digests import digest_bytes
from dagster_wandb_secure.core.envelope import (
    MAGIC,
    PREAMBLE,
    PREAMBLE_SIZE,
    TAG,
    read_header_unverified,
    seal,
    seal_to,
    unseal,
    unseal_from,
    verify_path,
)
from dagster_wandb_secure.core.errors import (
    AlgorithmMismatchError,
    ContextMismatchError,
    ExpiredKeyError,
    MalformedEnvelopeError,
    ResourceLimitError,
    RevokedKeyError,
    SerializerNotAllowedError,
    SignatureVerificationError,
    TamperedPayloadError,
    UnknownKeyError,
    UnsafePathError,
    UnsignedPayloadError,
)
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.policy import Policy
from kit import payloads

CTX = {"artifact": "my_artifact", "type": "dataset", "partition": None, "asset_key": "my_artifact"}


def split(data: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(preamble, header, signature, payload) of an envelope."""
    _m, _v, _f, hlen, slen = PREAMBLE.unpack(data[:PREAMBLE_SIZE])
    h_end = PREAMBLE_SIZE + hlen
    return (
        data[:PREAMBLE_SIZE],
        data[PREAMBLE_SIZE:h_end],
        data[h_end : h_end + slen],
        data[h_end + slen :],
    )


def resign(key_store: KeyStore, preamble: bytes, header: bytes, payload: bytes) -> bytes:
    """Build an envelope whose (modified) header is validly signed by the store's primary key:
    isolates the check under test from the signature check."""
    signer = key_store.signer()
    pre = PREAMBLE.pack(MAGIC, 1, 0, len(header), envelope.SIGNATURE_SIZES[signer.alg])
    sig = signer.sign(TAG + pre + header)
    return pre + header + sig + payload


def evil_envelope(key_store: KeyStore, marker: Path, **kw: object) -> bytes:
    """A validly signed envelope whose payload would create ``marker`` if unpickled."""
    return seal(payloads.TouchOnLoad(marker), key_store=key_store, context=CTX, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ round trips


SMALL_OBJECTS = [
    [1, 2, 3],
    {"a": 1, "b": [b"bytes", None, 3.5]},
    "text",
]


@pytest.mark.parametrize("serializer", ["pickle", "dill", "cloudpickle", "joblib"])
def test_round_trip_pickle_family_small(key_store: KeyStore, serializer: str) -> None:
    for obj in SMALL_OBJECTS:
        data = seal(obj, key_store=key_store, serializer=serializer, context=CTX)
        assert data.startswith(MAGIC)
        assert unseal(data, key_store=key_store, expected_context=CTX) == obj


@pytest.mark.parametrize("serializer", ["dill", "cloudpickle", "joblib"])
def test_round_trip_lambda(key_store: KeyStore, serializer: str) -> None:
    data = seal(lambda x, y: x + y, key_store=key_store, serializer=serializer, context=CTX)
    fn = unseal(data, key_store=key_store, expected_context=CTX)
    assert fn(1, 2) == 3


@pytest.mark.parametrize("serializer", ["pickle", "dill", "cloudpickle", "joblib"])
def test_round_trip_large_numpy_via_file(
    tmp_path: Path, key_store: KeyStore, serializer: str
) -> None:
    arr = np.arange(8 << 20, dtype=np.int64)  # 64 MiB
    path = tmp_path / f"output.{serializer}"
    header = seal_to(path, arr, key_store=key_store, serializer=serializer, context=CTX)
    assert header.payload_length >= arr.nbytes
    assert path.stat().st_size == header.payload_offset + header.payload_length
    back = unseal_from(path, key_store=key_store, expected_context=CTX)
    assert np.array_equal(back, arr)
    # the digest in the header is the digest (default BLAKE3) of exactly the payload bytes on disk
    raw = path.read_bytes()
    assert header.digest_alg == "blake3"
    assert digest_bytes("blake3", raw[header.payload_offset :]) == header.payload_digest


def test_pickle_large_read_is_zero_copy_and_writable(tmp_path: Path, key_store: KeyStore) -> None:
    arr = np.arange(1 << 20, dtype=np.float64)
    path = tmp_path / "output.pickle"
    seal_to(path, arr, key_store=key_store, context=CTX)
    back = unseal_from(path, key_store=key_store, expected_context=CTX)
    assert np.array_equal(back, arr)
    back[0] = 42.0  # arrays come back writable


def test_seal_to_binary_file_and_bytes_agree(tmp_path: Path, key_store: KeyStore) -> None:
    path = tmp_path / "out.bin"
    with path.open("wb") as fh:
        seal_to(fh, {"x": 1}, key_store=key_store, context=CTX)
    assert unseal(path.read_bytes(), key_store=key_store, expected_context=CTX) == {"x": 1}
    with path.open("rb") as fh:
        assert unseal_from(fh, key_store=key_store, expected_context=CTX) == {"x": 1}


def test_skops_round_trip_records_trusted_types(key_store: KeyStore) -> None:
    from sklearn.ensemble import RandomForestClassifier

    X = np.random.default_rng(0).normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(int)
    model = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    data = seal(model, key_store=key_store, serializer="skops", context=CTX)
    header = read_header_unverified(data)["header"]
    assert "sklearn.tree._tree.Tree" in header["serializer_params"]["trusted_types"]
    back = unseal(data, key_store=key_store, expected_context=CTX)
    assert (back.predict(X) == model.predict(X)).all()


def test_onnx_round_trip(key_store: KeyStore) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    node = helper.make_node("Add", ["a", "b"], ["c"])
    graph = helper.make_graph(
        [node],
        "add",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph)
    data = seal(model, key_store=key_store, serializer="onnx", context=CTX)
    back = unseal(data, key_store=key_store, expected_context=CTX)
    assert isinstance(back, onnx.ModelProto)
    assert back.graph.node[0].op_type == "Add"


def test_seal_records_the_digest_in_the_ledger(key_store: KeyStore) -> None:
    data = seal([1], key_store=key_store, context=CTX, run_id="run-1")
    header = read_header_unverified(data)["header"]
    rows = key_store.ledger.find_digest(header["payload_" + header["digest_alg"]])
    assert len(rows) == 1
    assert rows[0].key_id == header["kid"]


def test_core_imports_neither_dagster_nor_wandb() -> None:
    code = (
        "import sys; import dagster_wandb_secure.core.envelope, "
        "dagster_wandb_secure.core.manifest, "
        "dagster_wandb_secure.core.keys, dagster_wandb_secure.core.ledger, "
        "dagster_wandb_secure.core.serializers, dagster_wandb_secure.core.policy; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'wandb')); "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, f"core imported: {proc.stdout} {proc.stderr}"


# ------------------------------------------------------------------------------ attacks


def assert_refused(
    exc_type: type[Exception], data: bytes, key_store: KeyStore, marker: Path, **kw: object
) -> SignatureVerificationError:
    with pytest.raises(exc_type) as info:
        unseal(data, key_store=key_store, expected_context=kw.pop("ctx", CTX), **kw)  # type: ignore[arg-type]
    assert not marker.exists(), "malicious payload executed"
    err = info.value
    assert isinstance(err, SignatureVerificationError)
    assert err.reason and str(err)
    return err


def test_attack_01_bit_flip_anywhere(key_store: KeyStore, marker: Path) -> None:
    data = evil_envelope(key_store, marker)
    step = max(1, len(data) // 97)
    for i in range(0, len(data), step):
        for bit in (0, 7):
            mutated = bytearray(data)
            mutated[i] ^= 1 << bit
            with pytest.raises(SignatureVerificationError):
                unseal(bytes(mutated), key_store=key_store, expected_context=CTX)
    assert not marker.exists()


def test_attack_01_payload_flip_is_tampered(key_store: KeyStore, marker: Path) -> None:
    data = bytearray(evil_envelope(key_store, marker))
    data[-3] ^= 0x01
    err = assert_refused(TamperedPayloadError, bytes(data), key_store, marker)
    assert "my_artifact" in str(err)


def test_attack_02_truncated_and_lying_length(key_store: KeyStore, marker: Path) -> None:
    data = evil_envelope(key_store, marker)
    for cut in (1, 5, PREAMBLE_SIZE - 1, PREAMBLE_SIZE + 3, len(data) - 1):
        with pytest.raises(SignatureVerificationError):
            unseal(data[:cut], key_store=key_store, expected_context=CTX)
    pre, header, sig, payload = split(data)
    fields = json.loads(header)
    fields["payload_length"] = len(payload) + 1000
    forged = resign(key_store, pre, canonical.encode(fields), payload)
    assert_refused(TamperedPayloadError, forged, key_store, marker)
    # a preamble header length pointing past the end
    bad_pre = PREAMBLE.pack(MAGIC, 1, 0, 60000, len(sig))
    assert_refused(MalformedEnvelopeError, bad_pre + header + sig + payload, key_store, marker)


def test_attack_03_bytes_appended(key_store: KeyStore, marker: Path, tmp_path: Path) -> None:
    data = seal([1, 2], key_store=key_store, context=CTX)
    appended = data + payloads.reduce_os_system(marker)
    assert_refused(TamperedPayloadError, appended, key_store, marker)
    path = tmp_path / "env"
    path.write_bytes(appended)
    with pytest.raises(TamperedPayloadError):
        unseal_from(path, key_store=key_store, expected_context=CTX)
    assert not marker.exists()


def test_attack_04_key_not_in_trust_store(
    key_store: KeyStore, other_store: KeyStore, marker: Path
) -> None:
    data = evil_envelope(other_store, marker)
    assert_refused(UnknownKeyError, data, key_store, marker)


def test_attack_05_trusted_kid_other_signer(
    key_store: KeyStore, other_store: KeyStore, marker: Path
) -> None:
    data = evil_envelope(other_store, marker)
    pre, header, _sig, payload = split(data)
    fields = json.loads(header)
    fields["kid"] = key_store.primary().kid
    new_header = canonical.encode(fields)
    signer = other_store.signer()
    new_pre = PREAMBLE.pack(MAGIC, 1, 0, len(new_header), envelope.SIGNATURE_SIZES[signer.alg])
    forged = new_pre + new_header + signer.sign(TAG + new_pre + new_header) + payload
    assert_refused(TamperedPayloadError, forged, key_store, marker)


@pytest.mark.parametrize("kid", ["../../x", "", "k" * 5000, "ключ", "a/b", "..", "KEY\x00"])
def test_attack_05_weird_key_ids(key_store: KeyStore, marker: Path, kid: str) -> None:
    data = evil_envelope(key_store, marker)
    pre, header, sig, payload = split(data)
    fields = json.loads(header)
    fields["kid"] = kid
    new_header = canonical.encode(fields)
    forged = PREAMBLE.pack(MAGIC, 1, 0, len(new_header), len(sig)) + new_header + sig + payload
    with pytest.raises((UnknownKeyError, MalformedEnvelopeError, ResourceLimitError)) as info:
        unseal(forged, key_store=key_store, expected_context=CTX)
    assert not marker.exists()
    assert len(str(info.value)) < 2000  # a huge id is not echoed back whole


@pytest.mark.parametrize(
    "alg", ["none", "NONE", "noNE", "", "rsa-sha256", "HMAC-SHA256", "Ed25519"]
)
def test_attack_06_none_and_unknown_algorithms(tmp_path: Path, marker: Path, alg: str) -> None:
    ks = KeyStore.open(tmp_path / "ks")
    ks.generate("hmac-sha256")
    data = evil_envelope(ks, marker)
    pre, header, sig, payload = split(data)
    fields = json.loads(header)
    fields["alg"] = alg
    new_header = canonical.encode(fields)
    for signature in (sig, b""):
        forged = (
            PREAMBLE.pack(MAGIC, 1, 0, len(new_header), max(len(signature), 1))
            + new_header
            + (signature or b"\0")
            + payload
        )
        with pytest.raises(SignatureVerificationError):
            unseal(forged, key_store=ks, expected_context=CTX)
    assert not marker.exists()


def test_attack_06_empty_signature(key_store: KeyStore, marker: Path) -> None:
    data = evil_envelope(key_store, marker)
    pre, header, sig, payload = split(data)
    forged = PREAMBLE.pack(MAGIC, 1, 0, len(header), 0) + header + payload
    assert_refused(MalformedEnvelopeError, forged, key_store, marker)


def test_attack_07_algorithm_confusion(tmp_path: Path, marker: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    ks = KeyStore.open(tmp_path / "ks")
    kid = ks.generate("ed25519")
    data = evil_envelope(ks, marker)
    pre, header, _sig, payload = split(data)
    fields = json.loads(header)
    fields["alg"] = "hmac-sha256"
    new_header = canonical.encode(fields)
    new_pre = PREAMBLE.pack(MAGIC, 1, 0, len(new_header), 32)
    # the attacker uses the (public) Ed25519 key bytes as the HMAC secret
    pem = ks.export_public(kid)
    pub = serialization.load_pem_public_key(_pem_block(pem))
    raw_pub = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    import hmac as _hmac

    sig = _hmac.new(raw_pub, TAG + new_pre + new_header, "sha256").digest()
    forged = new_pre + new_header + sig + payload
    assert_refused(AlgorithmMismatchError, forged, ks, marker)


def _pem_block(data: bytes) -> bytes:
    start = data.index(b"-----BEGIN PUBLIC KEY-----")
    end = data.index(b"-----END PUBLIC KEY-----") + len(b"-----END PUBLIC KEY-----")
    return data[start:end]


def test_attack_08_envelope_stripped(key_store: KeyStore, marker: Path, tmp_path: Path) -> None:
    for name, build in payloads.ALL_LEGACY_EXPLOITS.items():
        raw = build(marker)
        err = assert_refused(UnsignedPayloadError, raw, key_store, marker)
        assert "adopt" in str(err), name
        path = tmp_path / f"output-{name}.pickle"
        path.write_bytes(raw)
        with pytest.raises(UnsignedPayloadError):
            unseal_from(path, key_store=key_store, expected_context=CTX)
        assert not marker.exists()


@pytest.mark.parametrize(
    "changes",
    [
        {"artifact": "other_artifact"},
        {"partition": "2023-01-02"},
        {"type": "model"},
        {"asset_key": "a/b"},
    ],
)
def test_attack_09_replay_under_other_context(
    key_store: KeyStore, marker: Path, changes: dict[str, str]
) -> None:
    data = evil_envelope(key_store, marker)
    err = assert_refused(ContextMismatchError, data, key_store, marker, ctx={**CTX, **changes})
    assert next(iter(changes)) in err.reason


def test_attack_09_replay_as_other_serializer(key_store: KeyStore, marker: Path) -> None:
    data = evil_envelope(key_store, marker)
    assert_refused(ContextMismatchError, data, key_store, marker, expected_serializer="dill")


def test_attack_12_revoked_and_expired_retired_keys(tmp_path: Path, marker: Path, alg: str) -> None:
    ks = KeyStore.open(tmp_path / "ks")
    old = ks.generate(alg)
    data = evil_envelope(ks, marker)
    ks.rotate()
    assert unseal(seal([1], key_store=ks, context=CTX), key_store=ks, expected_context=CTX) == [1]
    ks.revoke(old, reason="leaked in a test")
    assert_refused(RevokedKeyError, data, ks, marker)


def test_attack_12_retired_key_after_expiry(tmp_path: Path, marker: Path, alg: str) -> None:
    ks = KeyStore.open(tmp_path / "ks")
    ks.generate(alg, expires_in=timedelta(seconds=1))
    data = evil_envelope(ks, marker)
    ks.rotate()
    import time

    time.sleep(1.2)
    assert_refused(ExpiredKeyError, data, ks, marker)


def test_attack_17_oversized_headers(key_store: KeyStore, marker: Path) -> None:
    data = evil_envelope(key_store, marker)
    pre, header, sig, payload = split(data)
    huge = PREAMBLE.pack(MAGIC, 1, 0, 2**32 - 1, len(sig)) + header + sig + payload
    assert_refused(ResourceLimitError, huge, key_store, marker)
    big = b'{"a":"' + b"x" * 70000 + b'"}'
    assert_refused(
        ResourceLimitError,
        PREAMBLE.pack(MAGIC, 1, 0, len(big), 64) + big + b"\0" * 64,
        key_store,
        marker,
    )
    for doc in (b"[" * 5000 + b"]" * 5000, b'{"a":1,"a":2}', b'{"a":' + b"9" * 10**4 + b"}"):
        forged = PREAMBLE.pack(MAGIC, 1, 0, len(doc), len(sig)) + doc + sig + payload
        assert_refused(MalformedEnvelopeError, forged, key_store, marker)


def test_attack_17_length_2_pow_63(key_store: KeyStore, marker: Path) -> None:
    data = evil_envelope(key_store, marker)
    pre, header, sig, payload = split(data)
    fields = json.loads(header)
    fields["payload_length"] = 2**63
    forged = resign(key_store, pre, canonical.encode(fields), payload)
    assert_refused(ResourceLimitError, forged, key_store, marker)


def test_attack_18_encodings_and_versions(key_store: KeyStore, marker: Path) -> None:
    data = evil_envelope(key_store, marker)
    pre, header, sig, payload = split(data)
    for bad_header in (
        header.replace(b'"', b'"\xff', 1),  # invalid UTF-8
        header.replace(b":", b": ", 1),  # whitespace: non-canonical
        header.replace(b'"alg"', b'"\\u0061lg"', 1),  # escaped: non-canonical
    ):
        forged = PREAMBLE.pack(MAGIC, 1, 0, len(bad_header), len(sig)) + bad_header + sig + payload
        assert_refused(MalformedEnvelopeError, forged, key_store, marker)
    fields = json.loads(header)
    fields["extra"] = "field"
    forged = resign(key_store, pre, canonical.encode(fields), payload)
    assert_refused(MalformedEnvelopeError, forged, key_store, marker)
    v2 = PREAMBLE.pack(MAGIC, 2, 0, len(header), len(sig)) + header + sig + payload
    assert "version 2" in assert_refused(MalformedEnvelopeError, v2, key_store, marker).reason


def test_attack_20_policy_forbids_serializer(key_store: KeyStore, marker: Path) -> None:
    data = evil_envelope(key_store, marker)
    policy = Policy(allowed_serializers=frozenset({"skops", "onnx", "json"}))
    assert_refused(SerializerNotAllowedError, data, key_store, marker, policy=policy)


def test_attack_21_symlink_and_swap(key_store: KeyStore, marker: Path, tmp_path: Path) -> None:
    good = tmp_path / "good"
    seal_to(good, [1, 2, 3], key_store=key_store, context=CTX)
    link = tmp_path / "link"
    link.symlink_to(good)
    with pytest.raises(UnsafePathError):
        unseal_from(link, key_store=key_store, expected_context=CTX)

    # swap between verification and load: the bytes verified are the bytes loaded.
    evil = tmp_path / "evil"
    evil.write_bytes(payloads.reduce_os_system(marker))
    real_read_payload = _envelope_read._read_payload

    def read_then_swap(*args: object, **kw: object) -> object:
        view = real_read_payload(*args, **kw)  # type: ignore[arg-type]
        os.replace(evil, good)  # the attacker swaps the file right after it was read
        return view

    _envelope_read._read_payload = read_then_swap  # type: ignore[assignment]
    try:
        assert unseal_from(good, key_store=key_store, expected_context=CTX) == [1, 2, 3]
    finally:
        _envelope_read._read_payload = real_read_payload  # type: ignore[assignment]
    assert not marker.exists()


def test_verify_path_fast_and_deep(key_store: KeyStore, tmp_path: Path) -> None:
    path = tmp_path / "env"
    seal_to(path, list(range(1000)), key_store=key_store, context=CTX)
    assert verify_path(path, key_store=key_store, deep=True).verified
    data = bytearray(path.read_bytes())
    data[-2] ^= 1
    path.write_bytes(bytes(data))
    verify_path(path, key_store=key_store, deep=False)  # fast mode: header only
    with pytest.raises(TamperedPayloadError):
        verify_path(path, key_store=key_store, deep=True)


def test_inspect_is_labelled_unverified(key_store: KeyStore) -> None:
    info = read_header_unverified(seal([1], key_store=key_store, context=CTX))
    assert info["verified"] is False
    assert info["header"]["context"]["artifact"] == "my_artifact"


def test_error_message_names_artifact_key_and_hint(
    key_store: KeyStore, other_store: KeyStore
) -> None:
    data = seal([1], key_store=other_store, context=CTX)
    with pytest.raises(UnknownKeyError) as info:
        unseal(data, key_store=key_store, expected_context=CTX)
    text = str(info.value)
    assert "my_artifact" in text
    assert other_store.primary().kid in text
    assert "What to do" in text


def test_header_layout_is_documented_constants() -> None:
    assert PREAMBLE_SIZE == 16 and len(MAGIC) == 8
    assert struct.calcsize(">8sBBIH") == 16
    assert pickle.HIGHEST_PROTOCOL >= 5
