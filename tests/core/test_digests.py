"""Payload digest algorithms: BLAKE3 (default) and SHA-256 side by side, chosen by the signed
``digest_alg`` and accepted only from the reader's policy allow-list (no downgrade, no unknowns)."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import blake3
import numpy as np
import pytest

from dagster_wandb_secure.core import canonical
from dagster_wandb_secure.core.digests import DIGESTS, digest_bytes, digest_file, get_digest
from dagster_wandb_secure.core.envelope import (
    PREAMBLE_SIZE,
    read_header_unverified,
    seal,
    seal_to,
    unseal,
    unseal_from,
    verify_path,
)
from dagster_wandb_secure.core.errors import (
    AlgorithmMismatchError,
    MalformedEnvelopeError,
    TamperedPayloadError,
)
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.manifest import MANIFEST_NAME, verify_manifest, write_manifest
from dagster_wandb_secure.core.policy import Policy

CTX = {"artifact": "model", "type": "model", "partition": None, "asset_key": "model"}
SHA_ONLY = Policy(allowed_digests=frozenset({"sha256"}))


def test_registry_matches_the_reference_implementations(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # > 2 MiB: BLAKE3 uses its threads
    assert digest_bytes("sha256", data) == hashlib.sha256(data).hexdigest()
    assert digest_bytes("blake3", data) == blake3.blake3(data).hexdigest()
    path = tmp_path / "f"
    path.write_bytes(data)
    assert digest_file("blake3", path) == (blake3.blake3(data).hexdigest(), len(data))
    assert {d.size for d in DIGESTS.values()} == {32}
    with pytest.raises(ValueError, match="unknown"):
        get_digest("md5")


@pytest.mark.parametrize("dig", ["sha256", "blake3"])
def test_both_algorithms_round_trip_and_name_their_field(
    tmp_path: Path, key_store: KeyStore, dig: str
) -> None:
    arr = np.arange(1 << 20, dtype=np.int64)  # 8 MiB: the streamed, threaded path
    path = tmp_path / "out.pickle"
    header = seal_to(path, arr, key_store=key_store, context=CTX, digest_alg=dig)
    assert header.digest_alg == dig
    fields = read_header_unverified(path)["header"]
    assert fields["digest_alg"] == dig
    assert fields[f"payload_{dig}"] == header.payload_digest
    assert not {f"payload_{o}" for o in DIGESTS if o != dig} & set(fields)
    raw = path.read_bytes()
    assert digest_bytes(dig, raw[header.payload_offset :]) == header.payload_digest
    assert np.array_equal(unseal_from(path, key_store=key_store, expected_context=CTX), arr)
    assert verify_path(path, key_store=key_store, expected_context=CTX).digest_alg == dig


def test_sha256_only_reader_refuses_blake3(key_store: KeyStore) -> None:
    data = seal({"a": 1}, key_store=key_store, context=CTX, digest_alg="blake3")
    with pytest.raises(AlgorithmMismatchError, match="digest algorithm 'blake3' is not allowed"):
        unseal(data, key_store=key_store, expected_context=CTX, policy=SHA_ONLY)
    old = seal({"a": 1}, key_store=key_store, context=CTX, digest_alg="sha256")
    assert unseal(old, key_store=key_store, expected_context=CTX, policy=SHA_ONLY) == {"a": 1}


def _rewrite_header(data: bytes, change: dict) -> bytes:
    header_len = struct.unpack(">I", data[10:14])[0]
    sig_len = struct.unpack(">H", data[14:16])[0]
    fields = json.loads(data[PREAMBLE_SIZE : PREAMBLE_SIZE + header_len])
    fields.update(change)
    for key in [k for k, v in change.items() if v is None]:
        del fields[key]
    new = canonical.encode(fields)
    head = data[:10] + struct.pack(">I", len(new)) + data[14:16]
    return head + new + data[PREAMBLE_SIZE + header_len :] [: sig_len] + data[
        PREAMBLE_SIZE + header_len + sig_len :
    ]


def test_digest_alg_is_signed_no_downgrade(key_store: KeyStore) -> None:
    data = seal({"a": 1}, key_store=key_store, context=CTX, digest_alg="blake3")
    fields = read_header_unverified(data)["header"]
    payload = data[-fields["payload_length"] :]
    # relabel as sha256 with a correct sha256 of the payload: the signature no longer matches
    forged = _rewrite_header(
        data,
        {"digest_alg": "sha256", "payload_blake3": None,
         "payload_sha256": hashlib.sha256(payload).hexdigest()},
    )
    with pytest.raises(TamperedPayloadError):
        unseal(forged, key_store=key_store, expected_context=CTX)


def test_unknown_digest_alg_is_refused(key_store: KeyStore) -> None:
    data = seal({"a": 1}, key_store=key_store, context=CTX, digest_alg="sha256")
    forged = _rewrite_header(data, {"digest_alg": "md5"})
    with pytest.raises(MalformedEnvelopeError, match="digest algorithm 'md5' is unknown"):
        unseal(forged, key_store=key_store, expected_context=CTX)
    with pytest.raises(MalformedEnvelopeError, match="unknown"):
        seal({"a": 1}, key_store=key_store, context=CTX, digest_alg="md5")


@pytest.mark.parametrize("dig", ["sha256", "blake3"])
def test_manifest_entries_name_their_algorithm(
    tmp_path: Path, key_store: KeyStore, dig: str
) -> None:
    root = tmp_path / "v0"
    root.mkdir()
    seal_to(root / "output.pickle", [1, 2], key_store=key_store, context=CTX, digest_alg=dig)
    (root / "table.json").write_text('{"columns": ["a"]}')
    files = {"output.pickle": root / "output.pickle", "table.json": root / "table.json"}
    manifest, _ = write_manifest(files, key_store=key_store, context=CTX, digest_alg=dig)
    (root / MANIFEST_NAME).write_bytes(manifest)
    on_disk = {**files, MANIFEST_NAME: root / MANIFEST_NAME}
    vm = verify_manifest(on_disk, key_store=key_store, expected_context=CTX)
    doc = vm.entries
    assert doc["table.json"].digest_alg == dig and doc["output.pickle"].digest_alg == dig
    assert doc["table.json"].as_dict() == {
        "size": 18,
        dig: digest_bytes(dig, b'{"columns": ["a"]}'),
    }
    assert set(doc["output.pickle"].as_dict()) == {"size", f"envelope_payload_{dig}", "serializer"}
    if dig == "blake3":
        with pytest.raises(AlgorithmMismatchError):
            verify_manifest(on_disk, key_store=key_store, expected_context=CTX, policy=SHA_ONLY)
    else:
        verify_manifest(on_disk, key_store=key_store, expected_context=CTX, policy=SHA_ONLY)
