"""Fuzzing with hypothesis: mutated envelopes, manifests and key-store files.

Every example ends in the original object or one of the library's typed errors; anything else
(a bare ``ValueError`` from deep inside a library, a ``RecursionError``, an object that differs
from what was signed, a marker file) fails the test. Mutations: bit flips, truncation, extension,
splicing two envelopes, header fields re-encoded in another order, lying length fields (preamble
and header), overwritten byte ranges, and re-signed documents with hostile content (what a buggy
trusted writer could produce). Envelopes are unsealed in memory to keep the volume affordable:
well over 10,000 examples in the regular suite (``test_fuzz_volume`` checks the count); the
``slow`` variants multiply it. ``fuzz/`` has an atheris harness for long runs.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagster_wandb_secure.core.envelope import MAGIC, PREAMBLE, TAG, seal, unseal
from dagster_wandb_secure.core.errors import SecureArtifactError
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.manifest import (
    MANIFEST_NAME,
    build_manifest,
    manifest_context,
    verify_manifest,
)
from kit import payloads
from kit.adversarial import parse

CTX = {"artifact": "fuzz", "type": "dataset", "partition": None, "asset_key": "fuzz"}
OBJECTS: list[Any] = [
    {"numbers": list(range(20)), "text": "héllo"},
    [1.5, None, True, b"bytes"],
    "x" * 200,
]
EXAMPLES: Counter[str] = Counter()
def fast(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture(scope="module", params=["ed25519", "hmac-sha256"])
def material(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, Any]:
    root = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    ks = KeyStore.open(root / "keys")
    ks.generate(request.param)
    marker = root / "PWNED"
    goods = [seal(o, key_store=ks, context=CTX, record=False) for o in OBJECTS]
    goods.append(seal(OBJECTS[0], key_store=ks, context=CTX, serializer="json", record=False))
    # validly signed by the same key, for another artifact, carrying an exploit: splicing it
    # into a good envelope must never load it
    evil = seal(payloads.TouchOnLoad(marker), key_store=ks,
                context={**CTX, "artifact": "other"}, record=False)
    # a signed version folder for manifest fuzzing
    folder = root / "version"
    folder.mkdir()
    (folder / "output.pickle").write_bytes(goods[0])
    (folder / "data.csv").write_bytes(b"a,b\n1,2\n")
    files = {"output.pickle": folder / "output.pickle", "data.csv": folder / "data.csv"}
    doc = build_manifest(files)
    mctx = manifest_context(CTX)
    manifest = seal(doc, key_store=ks, serializer="json", context=mctx, record=False)
    return {"alg": request.param, "ks": ks, "root": root, "marker": marker, "goods": goods,
            "evil": evil, "folder": folder, "files": files, "doc": doc, "manifest": manifest}


# --- mutations ------------------------------------------------------------------------------

BYTE_MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20)),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("splice"), st.integers(0, 1 << 20), st.integers(0, 1 << 20)),
    st.tuples(st.just("overwrite"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=24)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=24)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.integers(1, 40)),
    st.tuples(st.just("hlen"), st.integers(0, (1 << 32) - 1)),
    st.tuples(st.just("slen"), st.integers(0, (1 << 16) - 1)),
    st.tuples(st.just("version"), st.integers(0, 255), st.integers(0, 255)),
)


def mutate(data: bytes, other: bytes, m: tuple[Any, ...]) -> bytes:
    kind = m[0]
    n = max(len(data), 1)
    if kind == "flip":
        if not data:
            return data
        out = bytearray(data)
        out[m[1] % n] ^= 1 << m[2]
        return bytes(out)
    if kind == "truncate":
        return data[: m[1] % n]
    if kind == "extend":
        return data + m[1]
    if kind == "splice":
        return data[: m[1] % n] + other[m[2] % max(len(other), 1):]
    if kind == "overwrite":
        i = m[1] % n
        return data[:i] + m[2] + data[i + len(m[2]):]
    if kind == "insert":
        i = m[1] % n
        return data[:i] + m[2] + data[i:]
    if kind == "delete":
        i = m[1] % n
        return data[:i] + data[i + m[2]:]
    if kind == "hlen":
        return data[:10] + struct.pack(">I", m[1]) + data[14:]
    if kind == "slen":
        return data[:14] + struct.pack(">H", m[1]) + data[16:]
    if kind == "version":
        return data[:8] + bytes([m[1], m[2]]) + data[10:]
    raise AssertionError(kind)


HEADER_MUTATION = st.one_of(
    st.tuples(st.just("reorder"), st.randoms(use_true_random=False)),
    st.tuples(st.just("drop"), st.integers(0, 20)),
    st.tuples(st.just("set"), st.integers(0, 20), st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=30),
        st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5),
                                                             st.text(max_size=5), max_size=3))),
    st.tuples(st.just("add"), st.text(max_size=12), st.text(max_size=12)),
    st.tuples(st.just("payload_length"), st.integers(-5, 2**64)),
)


def mutate_header(env: bytes, m: tuple[Any, ...], resign: Any) -> bytes:
    """Change the header's JSON (keeping the old signature unless ``resign`` is given)."""
    p = parse(env)
    fields = dict(p.fields)
    keys = sorted(fields)
    kind = m[0]
    if kind == "reorder":
        items = list(fields.items())
        m[1].shuffle(items)
        body = json.dumps(dict(items), separators=(",", ":"), ensure_ascii=False).encode()
    else:
        if kind == "drop":
            fields.pop(keys[m[1] % len(keys)])
        elif kind == "set":
            fields[keys[m[1] % len(keys)]] = m[2]
        elif kind == "add":
            fields[m[1]] = m[2]
        else:
            fields["payload_length"] = m[1]
        body = json.dumps(fields, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()
    pre = PREAMBLE.pack(MAGIC, 1, 0, len(body), len(p.signature))
    sig = resign.sign(TAG + pre + body) if resign is not None else p.signature
    return pre + body + sig + p.payload


def check_unseal(material: dict[str, Any], data: bytes, original: Any) -> str:
    """Unseal ``data``: the original object or a typed error. Returns the outcome's name."""
    try:
        value = unseal(data, key_store=material["ks"], expected_context=CTX)
    except SecureArtifactError as exc:
        assert str(exc), "typed error without a message"
        outcome = type(exc).__name__
    else:
        assert value == original, f"unsealed something other than what was signed: {value!r}"
        outcome = "original"
    assert not material["marker"].exists(), "a spliced exploit ran"
    return outcome


# --- envelopes: 2 x 3000 byte mutations, 2 x 1200 header mutations ------------------------------


@fast(3000)
@given(which=st.integers(0, len(OBJECTS)), ms=st.lists(BYTE_MUTATION, min_size=1, max_size=3))
def test_fuzz_envelope_bytes(material: dict[str, Any], which: int, ms: list[tuple[Any, ...]]
                             ) -> None:
    good = material["goods"][which]
    data = good
    for m in ms:
        data = mutate(data, material["evil"], m)
    # the last good envelope is OBJECTS[0] as JSON, which loads back equal
    original = OBJECTS[which] if which < len(OBJECTS) else OBJECTS[0]
    outcome = check_unseal(material, data, original)
    assert outcome != "original" or data == good, "a changed envelope was accepted"
    EXAMPLES["envelope-bytes"] += 1


@fast(1200)
@given(which=st.integers(0, len(OBJECTS) - 1), m=HEADER_MUTATION, resign=st.booleans())
def test_fuzz_envelope_header(material: dict[str, Any], which: int, m: tuple[Any, ...],
                              resign: bool) -> None:
    """Header JSON changed; with ``resign`` the trusted key re-signs it (a buggy writer), so the
    strict schema, canonical form and payload checks are what must hold."""
    env = material["goods"][which]
    data = mutate_header(env, m, material["ks"].signer() if resign else None)
    outcome = check_unseal(material, data, OBJECTS[which])
    if outcome == "original" and not resign:
        # without a new signature only an unchanged header may load (a no-op mutation)
        assert parse(data).header == parse(env).header
    EXAMPLES["envelope-header"] += 1


# --- manifests: 2 x 900 byte mutations, 2 x 700 re-signed documents -------------------------------


def check_manifest(material: dict[str, Any], manifest: bytes, tmp: Path) -> str:
    path = tmp / MANIFEST_NAME
    path.write_bytes(manifest)
    on_disk = {**material["files"], MANIFEST_NAME: path}
    try:
        verified = verify_manifest(on_disk, key_store=material["ks"], expected_context=CTX)
    except SecureArtifactError as exc:
        assert "fuzz" in str(exc), f"the error does not name the artifact: {exc}"
        return type(exc).__name__
    assert set(verified.entries) == {"output.pickle", "data.csv"}
    return "verified"


@fast(900)
@given(ms=st.lists(BYTE_MUTATION, min_size=1, max_size=3))
def test_fuzz_manifest_bytes(material: dict[str, Any], ms: list[tuple[Any, ...]],
                             tmp_path_factory: pytest.TempPathFactory) -> None:
    data = material["manifest"]
    for m in ms:
        data = mutate(data, material["goods"][0], m)
    outcome = check_manifest(material, data, _scratch(material))
    assert outcome != "verified" or data == material["manifest"]
    EXAMPLES["manifest-bytes"] += 1


def _scratch(material: dict[str, Any]) -> Path:
    path = material["root"] / "scratch"
    path.mkdir(exist_ok=True)
    return path


NAMES = st.one_of(
    st.sampled_from(["output.pickle", "data.csv", "../x", "/abs", "a//b", "a\x00b", "",
                     MANIFEST_NAME, "a\\b", ".", "x/" * 40 + "y", "é", "data.csv/"]),
    st.text(max_size=20),
)
ENTRY = st.one_of(
    st.fixed_dictionaries({"size": st.integers(-3, 2**40), "sha256": st.text(max_size=70)}),
    st.fixed_dictionaries({"size": st.integers(-3, 2**40),
                           "envelope_payload_sha256": st.text(max_size=70),
                           "serializer": st.sampled_from(["pickle", "dill", "json", "x"])}),
    st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=5), max_size=4),
    st.integers() | st.none() | st.text(max_size=5),
)
DOC_MUTATION = st.one_of(
    st.tuples(st.just("entry"), NAMES, ENTRY),
    st.tuples(st.just("drop"), st.sampled_from(["output.pickle", "data.csv"])),
    st.tuples(st.just("top"), st.sampled_from(["manifest_version", "files", "references", "x"]),
              st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers()),
                        st.dictionaries(st.text(max_size=4), st.integers(), max_size=3))),
    st.tuples(st.just("size"), st.sampled_from(["output.pickle", "data.csv"]),
              st.integers(0, 10_000)),
)


@fast(700)
@given(ms=st.lists(DOC_MUTATION, min_size=1, max_size=3))
def test_fuzz_manifest_documents(material: dict[str, Any], ms: list[tuple[Any, ...]]) -> None:
    """Manifest documents with hostile content, validly signed by the trusted key."""
    doc = json.loads(json.dumps(material["doc"]))
    for m in ms:
        if m[0] == "entry" and isinstance(doc.get("files"), dict):
            doc["files"][m[1]] = m[2]
        elif m[0] == "drop" and isinstance(doc.get("files"), dict):
            doc["files"].pop(m[1], None)
        elif m[0] == "top":
            doc[m[1]] = m[2]
        elif (m[0] == "size" and isinstance(doc.get("files"), dict)
              and isinstance(doc["files"].get(m[1]), dict)):
            doc["files"][m[1]]["size"] = m[2]
    try:
        manifest = seal(doc, key_store=material["ks"], serializer="json",
                        context=manifest_context(CTX), record=False)
    except SecureArtifactError:
        EXAMPLES["manifest-doc"] += 1
        return  # the writer refuses to sign it: fine
    outcome = check_manifest(material, manifest, _scratch(material))
    if outcome == "verified":
        assert doc["files"].keys() == material["doc"]["files"].keys()
        for name, entry in doc["files"].items():
            assert entry == material["doc"]["files"][name]
    EXAMPLES["manifest-doc"] += 1


# --- key-store files: 2 x 500 mutations of keystore.json and the key files -------------------------

KEYFILE = st.sampled_from(["keystore.json", "private", "public"])


@fast(500)
@given(target=KEYFILE, ms=st.lists(BYTE_MUTATION, min_size=1, max_size=2),
       reorder=st.booleans())
def test_fuzz_key_store_files(material: dict[str, Any], target: str,
                              ms: list[tuple[Any, ...]], reorder: bool) -> None:
    src = material["ks"].path
    dst = material["root"] / "ks-copy"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    kid = material["ks"].primary().kid
    if target == "keystore.json":
        path = dst / "keystore.json"
    elif target == "private":
        path = next((dst / "private").iterdir())
    else:
        pubs = list((dst / "public").iterdir())
        path = pubs[0] if pubs else dst / "keystore.json"
    data = path.read_bytes()
    if reorder and path.name == "keystore.json":
        doc = json.loads(data)
        data = json.dumps(dict(reversed(list(doc.items())))).encode()
    for m in ms:
        data = mutate(data, material["goods"][0], m)
    mode = path.stat().st_mode
    path.write_bytes(data)
    path.chmod(mode & 0o777)
    good = material["goods"][0]
    try:
        ks = KeyStore.open(dst, create=False)
        ks.records()
        value = unseal(good, key_store=ks, expected_context=CTX)
        assert value == OBJECTS[0]
        ks.signer(kid)
    except SecureArtifactError as exc:
        assert str(exc)
    EXAMPLES["key-store"] += 1


@fast(200)
@given(which=st.integers(0, len(OBJECTS)), ms=st.lists(BYTE_MUTATION, min_size=1, max_size=3))
def test_fuzz_cli_verify_and_inspect(material: dict[str, Any], which: int,
                                     ms: list[tuple[Any, ...]]) -> None:
    """The CLI on mutated envelope files: a verdict or a typed one-line error, never a
    traceback (``inspect`` parses without verifying, so it is the most exposed)."""
    from typer.testing import CliRunner

    from dagster_wandb_secure.cli import app

    data = material["goods"][which]
    for m in ms:
        data = mutate(data, material["evil"], m)
    path = _scratch(material) / "envelope.pickle"
    path.write_bytes(data)
    runner = CliRunner()
    for args in (["verify", str(path), "--artifact", "fuzz", "-k", str(material["ks"].path)],
                 ["inspect", str(path)]):
        result = runner.invoke(app, args)
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            f"{args[0]} crashed: {result.exception!r}\n{result.output}")
        assert result.exit_code in (0, 1, 2, 3), result.output
        assert "Traceback" not in result.output
    assert not material["marker"].exists()
    EXAMPLES["cli"] += 1


def _max_examples(fn: Any) -> int | None:
    found = getattr(fn, "_hypothesis_internal_use_settings", None)
    return None if found is None else int(found.max_examples)


@pytest.fixture(autouse=True)
def every_example_ran(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each fuzz test ran every example its settings ask for (counted in this process, so
    the check holds whichever pytest-xdist worker runs which test)."""
    wanted = _max_examples(request.function)
    before = sum(EXAMPLES.values())
    yield
    if wanted is not None and not request.node.get_closest_marker("slow"):
        ran = sum(EXAMPLES.values()) - before
        assert ran >= wanted, f"{request.node.name} ran {ran} of {wanted} examples"


def test_fuzz_volume() -> None:
    """The regular suite asks for at least 10,000 fuzz examples (each test's own count is
    checked by ``every_example_ran``): the regular fuzz tests, once per key algorithm."""
    regular = {
        name: _max_examples(fn)
        for name, fn in globals().items()
        if name.startswith("test_fuzz_") and _max_examples(fn) is not None
        and not any(mark.name == "slow" for mark in getattr(fn, "pytestmark", []))
    }
    assert len(regular) == 6, regular
    assert 2 * sum(n or 0 for n in regular.values()) >= 10_000, regular


@pytest.mark.slow
@settings(max_examples=50_000, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(which=st.integers(0, len(OBJECTS) - 1), ms=st.lists(BYTE_MUTATION, min_size=1,
                                                           max_size=6))
def test_fuzz_envelope_bytes_long(material: dict[str, Any], which: int,
                                  ms: list[tuple[Any, ...]]) -> None:
    data = material["goods"][which]
    for m in ms:
        data = mutate(data, material["evil"], m)
    check_unseal(material, data, OBJECTS[which])

