"""The attack catalogue (SECURITY.md, "Attack catalogue: tests and outcomes", items 1-25) end to end.

Every test drives a public surface: a real ``dagster.materialize`` with the IO manager (assets and
SourceAssets) over the local store, the CLI, or the key store / store APIs a user calls. Each runs
for Ed25519 and HMAC-SHA256 (the ``alg`` fixture) and asserts the exact error type, that the
message names the artifact and the reason, and, where code execution is the threat, that the
marker file a payload would create does not exist. Items 15 and 16 are in test_crash.py and
test_concurrency.py, item 19 in test_legacy_exploits.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import threading
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dagster import StaticPartitionsDefinition
from dagster_wandb_secure.cli import app
from dagster_wandb_secure.core.envelope import (
    PREAMBLE,
    PREAMBLE_SIZE,
    format_time,
    seal,
    unseal,
    verify_bytes,
)
from dagster_wandb_secure.core.errors import (
    AlgorithmMismatchError,
    ConfigurationError,
    ContextMismatchError,
    ExpiredKeyError,
    KeyPermissionError,
    MalformedEnvelopeError,
    ResourceLimitError,
    RevokedKeyError,
    RollbackError,
    SerializationError,
    SerializerNotAllowedError,
    SignatureVerificationError,
    TamperedPayloadError,
    UnknownKeyError,
    UnsafePathError,
    UnsignedPayloadError,
    WeakKeyError,
)
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.manifest import build_manifest, manifest_context
from kit import payloads
from kit.adversarial import (
    ENTITY,
    MANIFEST_NAME,
    PROJECT,
    World,
    find_secure_error,
    flip_bit,
    forge,
    parse,
    refusal,
    refused,
)

RUNNER = CliRunner()


def cli(*args: str) -> Any:
    return RUNNER.invoke(app, list(args), catch_exceptions=False)


def source_context(name: str) -> dict[str, str | None]:
    """What a SourceAsset reader expects: name, type and partition (no asset key)."""
    return {
        "artifact": name,
        "type": "artifact",
        "partition": None,
        "project": f"{ENTITY}/{PROJECT}",
    }


def forged_version(
    world: World,
    name: str,
    obj: Any = None,
    *,
    ks: KeyStore | None = None,
    context: dict[str, str | None] | None = None,
    **forge_args: Any,
) -> None:
    """Publish a version (payload + manifest) sealed by ``ks`` then rewritten by ``forge``:
    what an attacker with store write access and some key material can put in the store."""
    ks = ks or world.ks
    ctx = context or source_context(name)
    env = seal(obj if obj is not None else {"v": name}, key_store=ks, context=ctx, record=False)
    folder = world.staging()
    (folder / "output.pickle").write_bytes(env)
    doc = build_manifest({"output.pickle": folder / "output.pickle"})
    if forge_args:
        env = forge(env, **forge_args)
        doc["files"]["output.pickle"]["size"] = len(env)
    menv = seal(
        doc, key_store=ks, serializer="json", context=manifest_context(ctx), record=False
    )
    if forge_args:
        menv = forge(menv, **{k: v for k, v in forge_args.items() if k != "payload"})
    world.plant_version(name, {"output.pickle": env, MANIFEST_NAME: menv})


class RawHmac:
    """An HMAC-SHA256 'signer' over attacker-chosen secret bytes."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def sign(self, message: bytes) -> bytes:
        return hmac.new(self.secret, message, hashlib.sha256).digest()


# --- 1. one bit flipped anywhere ------------------------------------------------------------


def _offset_in(world: World, env: bytes, region: str) -> int:
    p = parse(env)
    sig_at = PREAMBLE_SIZE + len(p.header)
    if region == "payload":
        return sig_at + len(p.signature) + len(p.payload) // 2
    if region == "signature":
        return sig_at + 5
    # a digit of signed_at's microseconds: flipping bit 0 keeps it a digit, so the header
    # still parses and only the signature can notice
    return PREAMBLE_SIZE + p.header.index(b'"signed_at":"') + len(b'"signed_at":"') + 21


@pytest.mark.parametrize("region", ["payload", "header", "signature"])
def test_attack_01_one_bit_flipped(world: World, region: str, marker: Path) -> None:
    av = world.write("bits", {"secret": payloads.TouchOnLoad(marker).marker.name})
    env = world.bytes_of(av)
    world.overwrite(av, "output.pickle", flip_bit(env, _offset_in(world, env, region)))
    reason = "digest does not match the signed" if region == "payload" else "signature"
    refused(lambda: world.read("bits", source=False), TamperedPayloadError,
            artifact="bits", reason=reason)
    assert not marker.exists()


def test_attack_01_bit_flipped_in_manifest(world: World) -> None:
    av = world.write("bits_m", [1, 2, 3])
    menv = world.bytes_of(av, MANIFEST_NAME)
    world.overwrite(av, MANIFEST_NAME, flip_bit(menv, len(menv) - 3))
    refused(lambda: world.read("bits_m"), TamperedPayloadError,
            artifact="bits_m", reason="digest does not match the signed")


def test_attack_01_every_bit_of_a_small_envelope(world: World) -> None:
    """Every single bit of a whole envelope, through the library's in-memory unseal: each flip
    ends in a typed verification error (which one depends on the byte hit)."""
    ctx = source_context("tiny")
    env = seal([1], key_store=world.ks, context=ctx, record=False)
    for i in range(len(env) * 8):
        err = refusal(
            lambda i=i: unseal(flip_bit(env, i // 8, i % 8), key_store=world.ks,
                               expected_context=ctx)
        )
        assert isinstance(err, SignatureVerificationError), str(err)


# --- 2. truncation and lying lengths ----------------------------------------------------------


def test_attack_02_truncated_envelope(world: World) -> None:
    av = world.write("trunc", list(range(50)))
    env = world.bytes_of(av)
    world.overwrite(av, "output.pickle", env[:-7])
    refused(lambda: world.read("trunc", source=False), TamperedPayloadError,
            artifact="trunc", reason="bytes, the manifest signed")


def test_attack_02_header_length_promises_more_than_exists(world: World) -> None:
    ctx = source_context("longhdr")
    env = seal("x", key_store=world.ks, context=ctx, record=False)
    magic, version, flags, hlen, slen = PREAMBLE.unpack(env[:PREAMBLE_SIZE])
    lying = PREAMBLE.pack(magic, version, flags, hlen + 5000, slen) + env[PREAMBLE_SIZE:]
    refused(lambda: unseal(lying, key_store=world.ks, expected_context=ctx),
            MalformedEnvelopeError, artifact="longhdr", reason="truncated")
    # and through Dagster, as a planted version
    forged_version(world, "longhdr")
    av = world.store.resolve(ENTITY, PROJECT, "longhdr", alias="latest")
    world.overwrite(av, "output.pickle", lying)
    refused(lambda: world.read("longhdr"), TamperedPayloadError,
            artifact="longhdr", reason="bytes, the manifest signed")


def test_attack_02_payload_length_promises_more(world: World, tmp_path: Path) -> None:
    ctx = source_context("longpay")
    env = seal([1, 2], key_store=world.ks, context=ctx, record=False)
    p = parse(env)
    lying = forge(env, signer=world.ks.signer(), payload_length=len(p.payload) + 100)
    refused(lambda: unseal(lying, key_store=world.ks, expected_context=ctx),
            TamperedPayloadError, artifact="longpay", reason="payload truncated")
    f = tmp_path / "longpay.pickle"
    f.write_bytes(lying)
    out = cli("verify", str(f), "--artifact", "longpay", "-k", str(world.keys))
    assert out.exit_code == 1 and "truncated" in out.output


# --- 3. bytes appended after the payload ----------------------------------------------------


def test_attack_03_second_pickle_appended(world: World, marker: Path, tmp_path: Path) -> None:
    av = world.write("append", {"ok": True})
    env = world.bytes_of(av) + payloads.reduce_os_system(marker)
    world.overwrite(av, "output.pickle", env)
    refused(lambda: world.read("append", source=False), TamperedPayloadError,
            artifact="append", reason="manifest signed")
    ctx = {"artifact": "append", "type": "artifact", "partition": None, "asset_key": "append"}
    refused(lambda: unseal(env, key_store=world.ks, expected_context=ctx),
            TamperedPayloadError, artifact="append", reason="unexpected bytes after the payload")
    f = tmp_path / "append.pickle"
    f.write_bytes(env)
    out = cli("verify", str(f), "--artifact", "append", "-k", str(world.keys))
    assert out.exit_code == 1 and "unexpected bytes" in out.output
    assert not marker.exists()


# --- 4. a key not in the trust store ----------------------------------------------------------


def test_attack_04_signed_by_untrusted_key(world: World, marker: Path) -> None:
    forged_version(world, "foreign", payloads.TouchOnLoad(marker), ks=world.attacker)
    refused(lambda: world.read("foreign"), UnknownKeyError,
            artifact="foreign", reason="unknown|not in|does not hold")
    assert not marker.exists()


# --- 5. key id games ------------------------------------------------------------------------


def test_attack_05_trusted_kid_signed_by_another_key(world: World, marker: Path) -> None:
    trusted = world.ks.primary().kid
    forged_version(world, "kidswap", payloads.TouchOnLoad(marker),
                   signer=world.attacker.signer(), kid=trusted)
    refused(lambda: world.read("kidswap"), TamperedPayloadError,
            artifact="kidswap", reason="signature")
    assert not marker.exists()


@pytest.mark.parametrize(
    "kid",
    ["0123456789abcdef", "../../x", "", "k" * 5000, "kéy-ü", "KEY", "a/b", "a\x00b"],
    ids=["unknown", "path", "empty", "huge", "non-ascii", "upper", "slash", "nul"],
)
def test_attack_05_hostile_key_ids(world: World, kid: str, marker: Path) -> None:
    forged_version(world, "badkid", payloads.TouchOnLoad(marker),
                   signer=world.attacker.signer(), kid=kid)
    refused(lambda: world.read("badkid"), UnknownKeyError, artifact="badkid", reason="key")
    assert not marker.exists()
    assert not (world.keys.parent / "x").exists()


# --- 6. algorithm none and friends ----------------------------------------------------------


@pytest.mark.parametrize("alg_name", ["none", "NONE", "noNE", "", "rsa-sha256", "Ed25519",
                                      "HMAC-SHA256"])
def test_attack_06_algorithm_none_or_unknown(world: World, alg_name: str, marker: Path) -> None:
    forged_version(world, "algnone", payloads.TouchOnLoad(marker),
                   signer=world.attacker.signer(), alg=alg_name,
                   kid=world.ks.primary().kid)
    refused(lambda: world.read("algnone"), AlgorithmMismatchError,
            artifact="algnone", reason="algorithm")
    assert not marker.exists()


def test_attack_06_empty_signature(world: World, marker: Path) -> None:
    forged_version(world, "nosig", payloads.TouchOnLoad(marker), signature=b"", sig_len=0)
    refused(lambda: world.read("nosig"), MalformedEnvelopeError,
            artifact="nosig", reason="signature length 0")
    assert not marker.exists()


# --- 7. algorithm confusion -----------------------------------------------------------------


def test_attack_07_algorithm_confusion(world: World, marker: Path) -> None:
    rec = world.ks.primary()
    if world.alg == "ed25519":
        # the public key (which readers and the attacker hold) used as an HMAC secret
        from cryptography.hazmat.primitives import serialization

        pem = world.ks.export_public(rec.kid)
        pub = next(
            serialization.load_pem_public_key(block)
            for block in [pem[pem.index(b"-----BEGIN PUBLIC KEY"):]]
        )
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        forged_version(world, "confused", payloads.TouchOnLoad(marker),
                       signer=RawHmac(raw), alg="hmac-sha256", kid=rec.kid)
    else:
        forged_version(world, "confused", payloads.TouchOnLoad(marker),
                       signer=_Ed25519Signer(),
                       alg="ed25519", kid=rec.kid)
    refused(lambda: world.read("confused"), AlgorithmMismatchError,
            artifact="confused", reason="bound to|algorithm")
    assert not marker.exists()


class _Ed25519Signer:
    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.key = Ed25519PrivateKey.generate()

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)


# --- 8. envelope stripped -------------------------------------------------------------------


def test_attack_08_envelope_stripped_inside_signed_version(world: World, marker: Path) -> None:
    av = world.write("stripped", {"fine": 1})
    world.overwrite(av, "output.pickle", payloads.reduce_os_system(marker))
    refused(lambda: world.read("stripped", source=False), TamperedPayloadError,
            artifact="stripped", reason="bytes, the manifest signed")
    assert not marker.exists()


def test_attack_08_envelope_stripped_new_version(world: World, marker: Path) -> None:
    world.write("stripped2", {"fine": 1})
    world.plant_version("stripped2", {"output.pickle": payloads.reduce_os_system(marker)})
    refused(lambda: world.read("stripped2", source=False), UnsignedPayloadError,
            artifact="stripped2", reason="unsigned legacy payload")
    assert not marker.exists()


# --- 9. replay as another artifact, partition or serializer -------------------------------------


def test_attack_09_replayed_as_another_artifact(world: World) -> None:
    a = world.write("alpha", {"who": "alpha"})
    world.write("bravo", {"who": "bravo"})
    world.plant_version("bravo", world.files_of(a))
    refused(lambda: world.read("bravo"), ContextMismatchError,
            artifact="bravo", reason="artifact='alpha'")


def test_attack_09_replayed_as_another_partition(world: World) -> None:
    parts = StaticPartitionsDefinition(["red", "blue"])
    red = world.write("color", "red", partitions_def=parts, partition_key="red")
    world.plant_version("color.blue", world.files_of(red))
    refused(lambda: _read_partition(world, parts, "blue"), ContextMismatchError,
            artifact="color.blue", reason="red")


def test_attack_09_name_collision_never_yields_another_assets_data(world: World) -> None:
    """Partition "blue" of asset "color" and an op output named "color.blue" share one W&B
    artifact name; the signed context still tells them apart."""
    from dagster import Out, job, op

    parts = StaticPartitionsDefinition(["red", "blue"])
    world.write("color", "the blue partition", partitions_def=parts, partition_key="blue")

    @op(out=Out(metadata={"wandb_artifact_configuration": {"name": "color.blue"}},
                io_manager_key="m"))
    def squatter() -> str:
        return "not the blue partition"

    @job(resource_defs={"m": world.iom()})
    def squat() -> None:
        squatter()

    assert squat.execute_in_process().success
    refused(lambda: _read_partition(world, parts, "blue"), ContextMismatchError,
            artifact="color.blue", reason="partition")


def _read_partition(world: World, parts: StaticPartitionsDefinition, key: str) -> Any:
    from dagster import AssetIn, AssetKey, SourceAsset, asset, materialize

    up = SourceAsset(key=AssetKey("color"), io_manager_key="m", partitions_def=parts)
    got: dict[str, Any] = {}

    @asset(partitions_def=parts, ins={"color": AssetIn(input_manager_key="m")})
    def reader(color: Any) -> None:
        got["v"] = color

    materialize([up, reader], resources={"m": world.iom()}, selection=[reader],
                partition_key=key)
    return got["v"]


def test_attack_09_replayed_with_another_serializer(world: World) -> None:
    av = world.write("sername", {"a": 1})
    files = world.files_of(av)
    files["output.dill"] = files.pop("output.pickle")
    world.plant_version("sername", files)
    refused(lambda: world.read("sername", source=False), TamperedPayloadError,
            artifact="sername", reason="not covered by the signed manifest")
    ctx = {"artifact": "sername", "type": "artifact", "partition": None, "asset_key": "sername"}
    refused(lambda: verify_bytes(world.bytes_of(av), key_store=world.ks, expected_context=ctx,
                                 expected_serializer="dill"),
            ContextMismatchError, artifact="sername", reason="serializer 'pickle'")


# --- 10. rollback -----------------------------------------------------------------------------


def test_attack_10_latest_moved_back(world: World) -> None:
    world.write("roll", "old")
    world.write("roll", "new")
    assert world.read("roll") == "new"
    world.store.move_alias(ENTITY, PROJECT, "roll", "latest", 0)
    refused(lambda: world.read("roll"), RollbackError, artifact="roll", reason="v1")
    # an explicit version is still allowed
    assert world.read("roll", config={"version": "v0"}) == "old"


def test_attack_10_custom_alias_moved_back(world: World) -> None:
    cfg = {"aliases": ["gold"]}
    world.write("golden", "old", config=cfg)
    world.write("golden", "new", config=cfg)
    world.store.move_alias(ENTITY, PROJECT, "golden", "gold", 0)
    refused(lambda: world.read("golden", config={"alias": "gold"}), RollbackError,
            artifact="golden", reason="'gold'.*v1")


def test_attack_10_rollback_seen_by_a_reader_with_its_own_ledger(world: World) -> None:
    """A reader with its own key store (public keys / shared secret only) remembers the newest
    version it has seen; moving ``latest`` back afterwards is refused."""
    world.write("seen", "old")
    world.write("seen", "new")
    reader_keys = world.root / "reader-keys"
    kid = world.ks.primary().kid
    if world.alg == "ed25519":
        KeyStore.open(reader_keys).import_public(world.ks.export_public(kid))
    else:  # HMAC readers hold a copy of the shared secret, with a ledger of their own
        import shutil

        shutil.copytree(world.keys, reader_keys,
                        ignore=shutil.ignore_patterns("ledger.sqlite3*"))
    iom = world.iom(key_store=str(reader_keys))
    assert world.read("seen", iom=iom) == "new"
    world.store.move_alias(ENTITY, PROJECT, "seen", "latest", 0)
    refused(lambda: world.read("seen", iom=iom), RollbackError, artifact="seen", reason="v1")


# --- 11. mix-and-match --------------------------------------------------------------------------


def test_attack_11_envelopes_swapped_between_artifacts(world: World) -> None:
    left = world.write("left", "aaaa")
    right = world.write("rght", "bbbb")
    lenv, renv = world.bytes_of(left), world.bytes_of(right)
    assert len(lenv) == len(renv)
    world.overwrite(left, "output.pickle", renv)
    refused(lambda: world.read("left", source=False), ContextMismatchError,
            artifact="left", reason="rght")


def test_attack_11_envelopes_swapped_between_versions(world: World) -> None:
    v0 = world.write("mix", "first")
    v1 = world.write("mix", "other")
    world.overwrite(v1, "output.pickle", world.bytes_of(v0))
    refused(lambda: world.read("mix"), TamperedPayloadError,
            artifact="mix", reason="mix-and-match")


def test_attack_11_manifest_swapped(world: World) -> None:
    v0 = world.write("mixm", "first")
    v1 = world.write("mixm", "other")
    world.overwrite(v1, MANIFEST_NAME, world.bytes_of(v0, MANIFEST_NAME))
    refused(lambda: world.read("mixm"), TamperedPayloadError,
            artifact="mixm", reason="mix-and-match")


# --- 12. revoked key; retired key after expiry -------------------------------------------------


def test_attack_12_revoked_key(world: World) -> None:
    world.write("revd", "signed by k1")
    k1 = world.ks.primary().kid
    assert cli("keys", "rotate", "-k", str(world.keys)).exit_code == 0
    out = cli("keys", "revoke", k1, "--reason", "laptop stolen", "--yes", "-k", str(world.keys))
    assert out.exit_code == 0, out.output
    refused(lambda: world.read("revd"), RevokedKeyError, artifact="revd", reason="revoked")


def test_attack_12_retired_key_after_grace(world: World) -> None:
    world.write("retd", "signed by k1")
    world.ks.rotate(grace=timedelta(0))
    refused(lambda: world.read("retd"), ExpiredKeyError, artifact="retd", reason="expired|past")


# --- 13. signed after the key's expiry --------------------------------------------------------


def test_attack_13_signed_after_expiry(world: World) -> None:
    kid = world.ks.rotate(expires_in=timedelta(days=1))
    late = format_time(datetime.now(UTC) + timedelta(days=30))
    forged_version(world, "late", "x", signer=world.ks.signer(kid), signed_at=late)
    refused(lambda: world.read("late"), ExpiredKeyError, artifact="late", reason="after|expir")


# --- 14. rotate, then verify; destroy -------------------------------------------------------


def test_attack_14_rotation_keeps_old_artifacts_and_destroy_ends_them(world: World) -> None:
    world.write("before", "old")
    k1 = world.ks.primary().kid
    out = cli("keys", "rotate", "-k", str(world.keys), "--json")
    assert out.exit_code == 0, out.output
    k2 = json.loads(out.stdout)["kid"]
    world.write("after", "new")
    assert world.read("before") == "old"
    assert world.read("after") == "new"
    kids = {r.key_id for r in KeyStore.open(world.keys).ledger.rows(artifact="after")}
    assert kids == {k2}
    assert cli("keys", "destroy", k1, "--yes", "-k", str(world.keys)).exit_code == 0
    refused(lambda: world.read("before"), RevokedKeyError, artifact="before",
            reason="destroyed|revoked")
    assert world.read("after") == "new"


# --- 17. oversized / nested / duplicate headers ------------------------------------------------


def _raw_header_envelope(header: bytes, sig_len: int = 64, hlen: int | None = None) -> bytes:
    from dagster_wandb_secure.core.envelope import MAGIC

    n = len(header) if hlen is None else hlen
    return PREAMBLE.pack(MAGIC, 1, 0, n, sig_len) + header + b"\x00" * sig_len


@pytest.mark.parametrize(
    ("case", "exc", "reason"),
    [
        ("huge-length", ResourceLimitError, "header length"),
        ("nested", MalformedEnvelopeError, "nest|deep"),
        ("duplicate", MalformedEnvelopeError, "duplicate"),
        ("bignum", ResourceLimitError, "header length"),
        ("bignum-in-cap", MalformedEnvelopeError, "digit|integer|number"),
        ("payload-2^63", ResourceLimitError, "payload|size|limit|cap"),
    ],
)
def test_attack_17_hostile_headers(world: World, case: str, exc: type, reason: str) -> None:
    ctx = source_context("hdr")
    good = seal("x", key_store=world.ks, context=ctx, record=False)
    if case == "huge-length":
        env = _raw_header_envelope(b"{}", hlen=2**32 - 1)
    elif case == "nested":
        env = _raw_header_envelope(b'{"a":' * 5000 + b"1" + b"}" * 5000)
    elif case == "duplicate":
        env = _raw_header_envelope(parse(good).header[:-1] + b',"alg":"ed25519"}')
    elif case == "bignum":
        env = _raw_header_envelope(b'{"format":' + b"9" * 1_000_000 + b"}")
    elif case == "bignum-in-cap":
        env = _raw_header_envelope(b'{"format":' + b"9" * 5000 + b"}")
    else:
        # a trusted writer's (buggy) header claiming 2^63 payload bytes: refused by size policy
        env = forge(good, signer=world.ks.signer(), payload_length=2**63)
    refused(lambda: unseal(env, key_store=world.ks, expected_context=ctx), exc,
            artifact="hdr", reason=reason)


def test_attack_17_through_dagster(world: World) -> None:
    forged_version(world, "bighdr")
    av = world.store.resolve(ENTITY, PROJECT, "bighdr", alias="latest")
    world.overwrite(av, MANIFEST_NAME, _raw_header_envelope(b"{}", hlen=2**32 - 1))
    refused(lambda: world.read("bighdr"), ResourceLimitError,
            artifact="bighdr", reason="header length")


# --- 18. invalid UTF-8, non-canonical JSON, unknown version -----------------------------------


@pytest.mark.parametrize("case", ["utf8", "spaces", "order", "escape", "version2", "flags"])
def test_attack_18_non_canonical_or_unknown_version(world: World, case: str, tmp_path: Path
                                                    ) -> None:
    ctx = source_context("canon")
    good = seal("x", key_store=world.ks, context=ctx, record=False)
    p = parse(good)
    signer = world.ks.signer()
    if case == "utf8":
        env = forge(good, signer=signer,
                    header_bytes=p.header.replace(b'"canon"', b'"can\xff\xfe"'))
        reason = "UTF-8"
    elif case == "spaces":
        env = forge(good, signer=signer, header_bytes=p.header.replace(b'":', b'": '))
        reason = "canonical"
    elif case == "order":
        fields = json.loads(p.header)
        body = json.dumps(dict(reversed(list(fields.items()))), separators=(",", ":"),
                          ensure_ascii=False).encode()
        env = forge(good, signer=signer, header_bytes=body)
        reason = "canonical"
    elif case == "escape":
        env = forge(good, signer=signer,
                    header_bytes=p.header.replace(b'"canon"', b'"\\u0063anon"'))
        reason = "canonical"
    elif case == "version2":
        env = forge(good, signer=signer, version=2)
        reason = "unknown envelope format version 2"
    else:
        env = good[:9] + b"\x01" + good[10:]
        reason = "flags"
    refused(lambda: unseal(env, key_store=world.ks, expected_context=ctx),
            MalformedEnvelopeError, artifact="canon", reason=reason)
    f = tmp_path / "canon.pickle"
    f.write_bytes(env)
    out = cli("verify", str(f), "--artifact", "canon", "-k", str(world.keys))
    assert out.exit_code == 1, out.output


# --- 20. a valid signature is not a licence ---------------------------------------------------


def test_attack_20_policy_forbids_pickle(world: World, marker: Path) -> None:
    world.write("forbidden", {"x": 1})
    reader = world.iom(allowed_serializers=["skops", "onnx", "json"])
    refused(lambda: world.read("forbidden", iom=reader), SerializerNotAllowedError,
            artifact="forbidden", reason="pickle")


# --- 21. symlinks and swaps between check and load ----------------------------------------------


def test_attack_21_payload_is_a_symlink(world: World, tmp_path: Path) -> None:
    av = world.write("linked", "real")
    elsewhere = tmp_path / "elsewhere.pickle"
    elsewhere.write_bytes(world.bytes_of(av))
    path = world.path(av, "output.pickle")
    os.chmod(path.parent, 0o755)
    path.unlink()
    path.symlink_to(elsewhere)
    refused(lambda: world.read("linked", source=False), UnsafePathError,
            artifact="linked", reason="symlink|not a regular file")


def test_attack_21_planted_fifo_does_not_hang(world: World) -> None:
    av = world.write("fifo", "real")
    path = world.path(av, "output.pickle")
    os.chmod(path.parent, 0o755)
    path.unlink()
    os.mkfifo(path)
    refused(lambda: world.read("fifo", source=False), UnsafePathError,
            artifact="fifo", reason="not a regular file|fifo")


def test_attack_21_version_folder_is_a_symlink_to_another_artifact(world: World) -> None:
    a = world.write("real_a", "aaaa")
    b = world.write("real_b", "bbbb")
    folder_b = world.path(b, "output.pickle").parent
    folder_a = world.path(a, "output.pickle").parent
    os.chmod(folder_b, 0o755)
    import shutil

    shutil.rmtree(folder_b)
    folder_b.symlink_to(folder_a, target_is_directory=True)
    refused(lambda: world.read("real_b", source=False), UnsafePathError,
            artifact="real_b", reason="version folder .* is a symlink")


def test_attack_21_swapped_right_after_verification(world: World, marker: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic time-of-check/time-of-use: the moment the signed manifest has verified,
    the attacker swaps output.pickle for a same-size malicious pickle. The reader loads only
    bytes it verified itself, so it refuses; nothing executes."""
    import dagster_wandb_secure.core.manifest as manifest_module

    av = world.write("toctou", "v" * 300)
    good = world.bytes_of(av)
    evil = payloads.reduce_os_system(marker)
    real = manifest_module.verify_manifest

    def verify_then_swap(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        world.overwrite(av, "output.pickle", evil + b"\x00" * (len(good) - len(evil)))
        return out

    monkeypatch.setattr(manifest_module, "verify_manifest", verify_then_swap)
    # the private copy taken after the check is what gets inspected: not an envelope any more
    refused(lambda: world.read("toctou", source=False), UnsignedPayloadError,
            artifact="toctou", reason="not a signed envelope")
    assert not marker.exists()


def test_attack_21_file_swapped_during_reads(world: World, marker: Path) -> None:
    """A racing attacker swaps output.pickle (same size) for a malicious pickle while readers
    load: every read returns the signed value or a typed refusal; nothing executes."""
    av = world.write("racy", "v" * 300)
    good = world.bytes_of(av)
    evil = payloads.reduce_os_system(marker)
    assert len(evil) < len(good)
    bad = evil + b"\x00" * (len(good) - len(evil))  # same size as the signed file
    path = world.path(av, "output.pickle")
    os.chmod(path.parent, 0o755)
    stop = threading.Event()

    def swapper() -> None:
        spare = world.root / "spare"
        flip = False
        while not stop.is_set():
            spare.write_bytes(bad if flip else good)
            os.replace(spare, path)
            flip = not flip

    t = threading.Thread(target=swapper)
    t.start()
    outcomes: set[str] = set()
    try:
        for _ in range(12):
            try:
                value = world.read("racy", source=False)
                assert value == "v" * 300
                outcomes.add("ok")
            except Exception as exc:  # noqa: BLE001 - classified below
                err = find_secure_error(exc)
                assert isinstance(err, SignatureVerificationError | UnsafePathError), repr(exc)
                assert "racy" in str(err)
                outcomes.add(type(err).__name__)
    finally:
        stop.set()
        t.join()
    assert not marker.exists()
    assert outcomes


# --- 22. hostile file names -----------------------------------------------------------------


UNSAFE = {
    "../x": r"'\.' or '\.\.' component",
    "/abs": "is absolute",
    "a//b": "empty path component",
    "a\x00b": "NUL or control character",
    "./a": r"'\.' or '\.\.' component",
    "a/../../b": r"'\.' or '\.\.' component",
}


@pytest.mark.parametrize("bad", list(UNSAFE))
def test_attack_22_get_path_names(world: World, bad: str) -> None:
    world.write("names", {"a": 1})
    refused(lambda: world.read("names", config={"get_path": bad}), UnsafePathError,
            artifact="names", reason=UNSAFE[bad])


@pytest.mark.parametrize("bad", [*UNSAFE, b"\xff\xfe"])
def test_attack_22_store_refuses_unsafe_names(world: World, bad: str | bytes) -> None:
    src = world.staging() / "f"
    src.write_bytes(b"x")
    reason = UNSAFE[bad] if isinstance(bad, str) else "not valid UTF-8"
    refused(lambda: world.store.publish(entity=ENTITY, project=PROJECT, name="n", type="t",
                                        files={bad: src}),
            UnsafePathError, artifact="team/proj/n", reason=reason)


@pytest.mark.parametrize("key", ["add_files", "add_dirs"])
@pytest.mark.parametrize("bad", ["../x", "/abs", "a//b"])
def test_attack_22_add_files_and_dirs_names(world: World, key: str, bad: str) -> None:
    src = world.staging()
    (src / "f.txt").write_text("x")
    entry = {"local_path": str(src if key == "add_dirs" else src / "f.txt"), "name": bad}
    refused(lambda: world.write("adds", {"a": 1}, config={key: [entry]}), UnsafePathError,
            artifact=None, reason=UNSAFE[bad])


def test_attack_22_symlink_inside_add_dirs(world: World, tmp_path: Path) -> None:
    src = world.staging()
    (src / "ok.txt").write_text("x")
    secret = tmp_path / "secret.txt"
    secret.write_text("do not publish")
    (src / "link.txt").symlink_to(secret)
    refused(lambda: world.write("adddir", {"a": 1},
                                config={"add_dirs": [{"local_path": str(src)}]}),
            UnsafePathError, artifact="adddir", reason="symlink")


@pytest.mark.parametrize("bad", ["../x", "/abs", "a//b", "a\x00b"])
def test_attack_22_manifest_names(world: World, bad: str) -> None:
    """A signed manifest (a buggy or hostile writer) naming an unsafe path is refused."""
    ctx = source_context("mnames")
    env = seal("x", key_store=world.ks, context=ctx, record=False, digest_alg="sha256")
    doc = {"manifest_version": 1, "references": [],
           "files": {"output.pickle": {"size": len(env),
                                       "envelope_payload_sha256": parse(env).fields[
                                           "payload_sha256"], "serializer": "pickle"},
                     bad: {"size": 1, "sha256": "0" * 64}}}
    menv = seal(doc, key_store=world.ks, serializer="json", context=manifest_context(ctx),
                record=False)
    world.plant_version("mnames", {"output.pickle": env, MANIFEST_NAME: menv})
    refused(lambda: world.read("mnames"), UnsafePathError, artifact="mnames",
            reason="manifest file name")


# --- 23. extra unsigned file; empty artifact ------------------------------------------------


def test_attack_23_extra_unsigned_file(world: World, marker: Path) -> None:
    av = world.write("extra", {"a": 1})
    files = world.files_of(av)
    files["model.pkl"] = payloads.reduce_os_system(marker)
    world.plant_version("extra", files)
    refused(lambda: world.read("extra", source=False), TamperedPayloadError,
            artifact="extra", reason="not covered by the signed manifest")
    assert not marker.exists()


def test_attack_23_empty_artifact(world: World) -> None:
    ctx = source_context("empty")
    doc = {"manifest_version": 1, "files": {}, "references": []}
    menv = seal(doc, key_store=world.ks, serializer="json", context=manifest_context(ctx),
                record=False)
    world.plant_version("empty", {MANIFEST_NAME: menv})
    refused(lambda: world.read("empty"), TamperedPayloadError, artifact="empty",
            reason="empty artifact")
    with pytest.raises(ConfigurationError, match="empty artifact"):
        build_manifest({})


# --- 24. skops: untrusted types, duplicate entries, bad CRC ----------------------------------


def _skops_envelope(world: World, ctx: dict[str, str | None], payload: bytes,
                    params: dict[str, Any] | None = None) -> bytes:
    base = seal({"k": 1}, key_store=world.ks, context=ctx, serializer="skops", record=False)
    changes: dict[str, Any] = {}
    if params is not None:
        changes["serializer_params"] = params
    return forge(base, signer=world.ks.signer(), payload=payload, **changes)


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def test_attack_24_skops_untrusted_type(world: World, marker: Path) -> None:
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(n_estimators=2, random_state=0).fit([[0], [1]], [0, 1])
    ctx = source_context("skmodel")
    env = seal(model, key_store=world.ks, context=ctx, serializer="skops", record=False)
    params = dict(parse(env).fields["serializer_params"])
    params["trusted_types"] = []
    forged = forge(env, signer=world.ks.signer(), serializer_params=params)
    refused(lambda: unseal(forged, key_store=world.ks, expected_context=ctx),
            SerializationError, artifact="skmodel", reason=r"Untrusted types.*_tree\.Tree")
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_attack_24_skops_duplicate_entries_and_bad_crc(world: World) -> None:
    ctx = source_context("skzip")
    good = seal({"k": 1}, key_store=world.ks, context=ctx, serializer="skops", record=False)
    payload = parse(good).payload
    with zipfile.ZipFile(io.BytesIO(payload)) as zf:
        entries = [(i.filename, zf.read(i)) for i in zf.infolist()]
    dup = _zip([*entries, entries[0]])
    crc = bytearray(payload)
    # corrupt one byte of the first stored member's data: its CRC no longer matches
    idx = payload.index(b"PK\x03\x04") + 30 + len(entries[0][0]) + 1
    crc[idx] ^= 0xFF
    for bad, reason in ((dup, "duplicate"), (bytes(crc), "crc|corrupt|zip")):
        env = _skops_envelope(world, ctx, bad)
        refused(lambda env=env: unseal(env, key_store=world.ks, expected_context=ctx),
                MalformedEnvelopeError, artifact="skzip", reason=reason)


# --- 25. weak key material ------------------------------------------------------------------


def test_attack_25_short_hmac_secret(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHORT_KEY", base64.b64encode(os.urandom(16)).decode())
    refused(lambda: world.write("weak", 1, iom=world.iom(signing_key="env:SHORT_KEY")),
            WeakKeyError, artifact=None, reason="32|dws-hmac-sha256-v1")


def test_attack_25_passphrase_as_key(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PASS_KEY", "correct horse battery staple")
    refused(lambda: KeyStore.open(world.keys).load_env_key("PASS_KEY"), WeakKeyError,
            artifact=None, reason="base64|32|key")
    monkeypatch.setenv("PASS_KEY", base64.b64encode(b"password" * 5).decode())
    refused(lambda: KeyStore.open(world.keys).load_env_key("PASS_KEY"), WeakKeyError,
            artifact=None, reason="distinct|random|weak|repeat")


def test_attack_25_private_key_readable_by_others(world: World) -> None:
    world.write("perm", 1)
    kid = world.ks.primary().kid
    private = next((world.keys / "private").glob(f"{kid}.*"))
    private.chmod(0o644)
    err = refused(lambda: world.write("perm", 2), KeyPermissionError, artifact=None,
                  reason="readable by group or others")
    assert f"chmod 600 {private}" in str(err)


# --- the W&B store in offline mode (reads are served from its local mirror) ---------------------


def test_attacks_01_04_10_through_the_wandb_store_offline(world: World, marker: Path) -> None:
    iom = world.iom(store="wandb")
    world.write("wb", "old", iom=iom)
    av = world.write("wb", "new", iom=iom)
    assert world.read("wb", iom=iom) == "new"
    env = world.bytes_of(av)
    world.overwrite(av, "output.pickle", flip_bit(env, len(env) - 2))
    refused(lambda: world.read("wb", iom=iom), TamperedPayloadError, artifact="wb",
            reason="digest does not match the signed")
    world.store.move_alias(ENTITY, PROJECT, "wb", "latest", 0)
    refused(lambda: world.read("wb", iom=iom), RollbackError, artifact="wb", reason="v1")
    forged_version(world, "wb_foreign", payloads.TouchOnLoad(marker), ks=world.attacker)
    refused(lambda: world.read("wb_foreign", iom=iom), UnknownKeyError, artifact="wb_foreign",
            reason="key")
    assert not marker.exists()
