"""Guarantee: a planted manifest costs a reader only what its checked preamble and header allow.

Readers used to read the whole manifest file (up to ``max_manifest_entries * 1400`` bytes, about
140 MB) before looking at its 16-byte preamble: a bogus manifest cost every reader and every
audited version ~128 MiB. Now ``read_bounded_envelope`` checks the magic and the header length
first, reads only the header, the signature and the payload length the header announces (plus
one byte), and refuses an envelope claiming more than ``Policy.max_manifest_bytes``.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from dagster_wandb_secure.core import canonical
from dagster_wandb_secure.core.envelope import MAGIC, PREAMBLE, read_header_unverified
from dagster_wandb_secure.core.errors import (
    ResourceLimitError,
    SecureArtifactError,
    TamperedPayloadError,
    UnsignedPayloadError,
)
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.manifest import MANIFEST_NAME, verify_manifest, write_manifest

BIG = 140 * 1000 * 1000
CTX = {"artifact": "m", "type": "dataset", "partition": None, "asset_key": "m",
       "project": "team/proj"}


@pytest.fixture
def signed(tmp_path: Path) -> tuple[KeyStore, Path, bytes]:
    ks = KeyStore.open(tmp_path / "keys")
    ks.generate("ed25519")
    data = tmp_path / "data.bin"
    data.write_bytes(b"payload")
    manifest, _ = write_manifest({"data.bin": data}, key_store=ks, context=CTX)
    return ks, data, manifest


def _plant(path: Path, head: bytes) -> None:
    """``head`` followed by zeros up to 140 MB (a sparse file: cheap on disk)."""
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(BIG)
    assert os.path.getsize(path) == BIG


def _peak_of_verifying(ks: KeyStore, data: Path, manifest: Path) -> tuple[int, BaseException]:
    tracemalloc.start()
    try:
        try:
            verify_manifest({MANIFEST_NAME: manifest, "data.bin": data}, key_store=ks,
                            expected_context=CTX)
        except SecureArtifactError as exc:
            err: BaseException = exc
        else:  # pragma: no cover - the test fails below
            err = AssertionError("the bogus manifest verified")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, err


def _forged_header(real: bytes, payload_length: int) -> bytes:
    fields = dict(read_header_unverified(real)["header"])
    fields["payload_length"] = payload_length
    header = canonical.encode(fields)
    return PREAMBLE.pack(MAGIC, 1, 0, len(header), 64) + header + b"\x00" * 64


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("no-magic", UnsignedPayloadError),  # 140 MB of garbage
        ("huge-claim", ResourceLimitError),  # a header claiming a 140 MB payload
        ("padded", TamperedPayloadError),  # a real manifest followed by 140 MB
    ],
)
def test_a_140_mb_bogus_manifest_costs_a_reader_well_under_1_mib(
    signed: tuple[KeyStore, Path, bytes], tmp_path: Path, case: str,
    error: type[SecureArtifactError],
) -> None:
    ks, data, real = signed
    head = {
        "no-magic": b"\x80\x04not an envelope",
        "huge-claim": _forged_header(real, BIG),
        "padded": real,
    }[case]
    manifest = tmp_path / MANIFEST_NAME
    _plant(manifest, head)
    peak, err = _peak_of_verifying(ks, data, manifest)
    assert type(err) is error, err
    assert peak < 1 << 20, f"reading a bogus manifest allocated {peak} bytes"


def test_a_real_manifest_still_verifies(signed: tuple[KeyStore, Path, bytes],
                                        tmp_path: Path) -> None:
    ks, data, real = signed
    (tmp_path / MANIFEST_NAME).write_bytes(real)
    vm = verify_manifest({MANIFEST_NAME: tmp_path / MANIFEST_NAME, "data.bin": data},
                         key_store=ks, expected_context=CTX)
    assert set(vm.entries) == {"data.bin"}
