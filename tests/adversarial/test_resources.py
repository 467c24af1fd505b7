"""Resource bounds: hostile sizes end in a typed error within measured, bounded memory.

Peak memory is measured with ``tracemalloc`` around the refused call only (the hostile input
itself is built before measuring). Bounds are generous multiples of what a correct
implementation needs and far below what the hostile input asks for.
"""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dagster_wandb_secure.core.envelope import MAGIC, PREAMBLE, seal, unseal
from dagster_wandb_secure.core.errors import (
    MalformedEnvelopeError,
    ResourceLimitError,
)
from dagster_wandb_secure.core.manifest import MANIFEST_NAME, manifest_context, verify_manifest
from dagster_wandb_secure.core.policy import Policy
from dagster_wandb_secure.stores.base import StoreError
from kit.adversarial import ENTITY, PROJECT, World, forge, refused

MiB = 1 << 20
CTX = {"artifact": "bounded", "type": "artifact", "partition": None}


def peak_of(action: Callable[[], Any]) -> tuple[int, BaseException | None]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    err: BaseException | None = None
    try:
        action()
    except BaseException as exc:  # noqa: BLE001 - returned
        err = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, err


def bounded_refusal(action: Callable[[], Any], exc: type, reason: str, bound: int,
                    artifact: str | None = "bounded") -> None:
    peak, _ = peak_of(lambda: refused(action, exc, artifact=artifact, reason=reason))
    assert peak < bound, f"peak {peak / MiB:.1f} MiB over the {bound / MiB:.1f} MiB bound"


def envelope_with_header(header: bytes, hlen: int | None = None) -> bytes:
    n = len(header) if hlen is None else hlen
    return PREAMBLE.pack(MAGIC, 1, 0, n, 64) + header + b"\0" * 64


def test_header_length_2_pow_32_is_refused_before_allocating(world: World) -> None:
    env = envelope_with_header(b"{}", hlen=2**32 - 1)
    bounded_refusal(lambda: unseal(env, key_store=world.ks, expected_context=CTX),
                    ResourceLimitError, "header length", 256 * 1024)


def test_huge_header_is_refused_before_parsing(world: World) -> None:
    body = b'{"a":"' + b"x" * (8 * MiB) + b'"}'
    env = envelope_with_header(body)
    bounded_refusal(lambda: unseal(env, key_store=world.ks, expected_context=CTX),
                    ResourceLimitError, "header length", 1 * MiB)


@pytest.mark.parametrize("shape", ["objects", "arrays"])
def test_deeply_nested_header(world: World, shape: str) -> None:
    depth = 30_000
    body = (b'{"a":' * depth + b"1" + b"}" * depth) if shape == "objects" else (
        b"[" * depth + b"]" * depth)
    env = envelope_with_header(body)
    bounded_refusal(lambda: unseal(env, key_store=world.ks, expected_context=CTX),
                    MalformedEnvelopeError, "nest|deep", 2 * MiB)


def test_payload_length_2_pow_63_signed_by_a_trusted_key(world: World) -> None:
    good = seal("x", key_store=world.ks, context=CTX, record=False)
    env = forge(good, signer=world.ks.signer(), payload_length=2**63)
    bounded_refusal(lambda: unseal(env, key_store=world.ks, expected_context=CTX),
                    ResourceLimitError, "payload", 256 * 1024)


def _manifest_doc(entries: int) -> dict[str, Any]:
    files = {f"f/{i:06d}": {"size": 1, "sha256": "0" * 64} for i in range(entries)}
    return {"manifest_version": 1, "files": files, "references": []}


def test_manifest_of_100001_entries(world: World, tmp_path: Path) -> None:
    """A validly signed manifest one entry over the default cap of 100,000."""
    doc = _manifest_doc(100_001)
    manifest = seal(doc, key_store=world.ks, serializer="json",
                    context=manifest_context(CTX), record=False)
    del doc
    path = tmp_path / MANIFEST_NAME
    path.write_bytes(manifest)
    size = len(manifest)
    del manifest
    bounded_refusal(
        lambda: verify_manifest({MANIFEST_NAME: path}, key_store=world.ks, expected_context=CTX),
        ResourceLimitError, "100001 entries", 40 * size,
    )


def test_manifest_over_a_small_cap_is_not_even_parsed(world: World, tmp_path: Path) -> None:
    doc = _manifest_doc(20_000)
    manifest = seal(doc, key_store=world.ks, serializer="json",
                    context=manifest_context(CTX), record=False)
    path = tmp_path / MANIFEST_NAME
    path.write_bytes(manifest)
    policy = Policy(max_manifest_entries=1000)
    bounded_refusal(
        lambda: verify_manifest({MANIFEST_NAME: path}, key_store=world.ks,
                                expected_context=CTX, policy=policy),
        ResourceLimitError, "larger than", 4 * MiB,
    )


def _bomb(size: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("schema.json", "w", force_zip64=True) as fh:
            chunk = b"\0" * MiB
            for _ in range(size // MiB):
                fh.write(chunk)
    return buf.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return _bomb(128 * MiB)  # ~125 KiB compressed


def _signed_skops(world: World, payload: bytes) -> bytes:
    base = seal({"k": 1}, key_store=world.ks, context=CTX, serializer="skops", record=False)
    return forge(base, signer=world.ks.signer(), payload=payload)


def test_skops_zip_bomb_over_the_policy_cap(world: World, bomb: bytes) -> None:
    env = _signed_skops(world, bomb)
    policy = Policy(max_zip_uncompressed_bytes=64 * MiB)
    bounded_refusal(lambda: unseal(env, key_store=world.ks, expected_context=CTX,
                                   policy=policy),
                    ResourceLimitError, "expand to", 4 * MiB)


def test_skops_zip_bomb_lying_about_its_size(world: World, bomb: bytes) -> None:
    """The central directory claims 1 MiB; the stream holds 128 MiB: refused in bounded memory
    (the CRC check streams; nothing is expanded into memory)."""
    data = bytearray(bomb)
    cd = data.rindex(b"PK\x01\x02")
    assert int.from_bytes(data[cd + 24:cd + 28], "little") == 128 * MiB
    data[cd + 24:cd + 28] = (1 * MiB).to_bytes(4, "little")  # uncompressed size
    env = _signed_skops(world, bytes(data))
    peak, exc = peak_of(lambda: unseal(env, key_store=world.ks, expected_context=CTX))
    assert isinstance(exc, MalformedEnvelopeError | ResourceLimitError), repr(exc)
    assert "bounded" in str(exc)
    assert peak < 16 * MiB, f"peak {peak / MiB:.1f} MiB"


def test_file_count_bomb_over_the_policy_cap(world: World, tmp_path: Path) -> None:
    """More files on disk than the policy allows: refused by count before any is opened."""
    paths = {f"f{i}": tmp_path / "never-opened" / f"f{i}" for i in range(1001)}
    paths[MANIFEST_NAME] = tmp_path / "never-opened" / MANIFEST_NAME
    bounded_refusal(
        lambda: verify_manifest(paths, key_store=world.ks, expected_context=CTX,
                                policy=Policy(max_files=1000)),
        ResourceLimitError, "1002 files", 1 * MiB,
    )


@pytest.mark.slow
def test_file_count_bomb_in_a_version(world: World) -> None:
    """A version folder stuffed with 100,001 extra files (over the default 100,000): the
    store refuses to list it, before any file is opened or hashed."""
    av = world.write("many", {"a": 1})
    folder = world.path(av, "output.pickle").parent
    folder.chmod(0o755)
    extra = folder / "bomb"
    extra.mkdir()
    for i in range(100_001):
        (extra / f"{i}").touch()
    store = world.store
    av = store.resolve(ENTITY, PROJECT, "many", alias="latest")
    peak, exc = peak_of(lambda: world.read("many"))
    from kit.adversarial import find_secure_error

    err = find_secure_error(exc) if exc is not None else None
    assert type(err) is StoreError, repr(exc)
    assert "many" in str(err) and "more than 100000 entries" in str(err)
    assert peak < 400 * MiB, f"peak {peak / MiB:.1f} MiB"



