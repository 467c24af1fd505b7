"""Key lifecycle guarantees (issue 11 items 1-4, issue 15 item 7): an ended key verifies nothing,
future-dated envelopes are refused, HMAC env keys must be in the key format, a key store must
be the user's own and outside every artifact store, and one key matches by fingerprint whatever
id a writer gave it. Every "nothing executed" proof uses a marker-file pickle."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dagster_wandb_secure.core.algorithms import (
    HMAC_CHECKSUM_TAG,
    HMAC_KEY_PREFIX,
    format_hmac_key,
)
from dagster_wandb_secure.core.envelope import seal, unseal
from dagster_wandb_secure.core.errors import (
    ExpiredKeyError,
    KeyPermissionError,
    KeyStoreError,
    MalformedEnvelopeError,
    RevokedKeyError,
    UnknownKeyError,
    WeakKeyError,
)
from dagster_wandb_secure.core.fsutil import ForeignOwnerWarning
from dagster_wandb_secure.core.keys import KeyStatus, KeyStore
from dagster_wandb_secure.stores.local import LocalArtifactStore
from kit.payloads import TouchOnLoad

CTX = {"artifact": "model", "type": "model", "partition": None}
OTHER_UID = 12345


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def insider_pickle(ks: KeyStore, marker: Path) -> bytes:
    """What an insider holding a copy of a key signs today: a pickle that touches ``marker``."""
    return seal(TouchOnLoad(marker), key_store=ks, context=CTX, record=False)


def refused_and_nothing_ran(data: bytes, reader: KeyStore, marker: Path, err: type) -> Exception:
    with pytest.raises(err) as caught:
        unseal(data, key_store=reader, expected_context=CTX)
    assert not marker.exists(), "the payload ran"
    return caught.value


# --- item 1: retire / promote --grace end a key; bundles carry status and end date -------------


def test_retired_key_verifies_nothing_insider_pickle_never_runs(
    tmp_path: Path, alg: str, marker: Path
) -> None:
    ks = KeyStore.open(tmp_path / "keys")
    old = ks.generate(alg)
    insider = KeyStore.open(shutil.copytree(ks.path, tmp_path / "insider-copy"))
    new = ks.generate(alg)
    ks.promote(new)
    ends = ks.retire(old)  # default: ends now
    assert ks.get(old).not_after == ends and ks.get(old).status is KeyStatus.VERIFY_ONLY
    assert insider.primary().kid == old
    err = refused_and_nothing_ran(insider_pickle(insider, marker), ks, marker, ExpiredKeyError)
    assert err.key_id == old and "verifies nothing" in str(err)


def test_retire_with_grace_then_the_key_ends(tmp_path: Path, alg: str, marker: Path) -> None:
    clock = Clock()
    ks = KeyStore.open(tmp_path / "keys", clock=clock)
    old = ks.generate(alg)
    signed = seal({"ok": 1}, key_store=ks, context=CTX, record=False)
    ks.promote(ks.generate(alg))
    ks.retire(old, grace=timedelta(days=7))
    ks.retire(old, grace=timedelta(days=30))  # retiring again never extends the key
    assert ks.get(old).not_after is not None
    assert ks.get(old).not_after - datetime.now(UTC) < timedelta(days=8)
    assert unseal(signed, key_store=ks, expected_context=CTX) == {"ok": 1}  # within the grace
    clock.offset = timedelta(days=8)
    with pytest.raises(ExpiredKeyError):
        unseal(signed, key_store=ks, expected_context=CTX)


def test_promote_with_grace_retires_the_old_primary(tmp_path: Path, alg: str) -> None:
    clock = Clock()
    ks = KeyStore.open(tmp_path / "keys", clock=clock)
    old = ks.generate(alg)
    signed = seal({"ok": 1}, key_store=ks, context=CTX, record=False)
    ks.promote(ks.generate(alg), grace=timedelta(days=1))
    assert ks.get(old).not_after is not None
    assert unseal(signed, key_store=ks, expected_context=CTX) == {"ok": 1}
    clock.offset = timedelta(days=2)
    with pytest.raises(ExpiredKeyError):
        unseal(signed, key_store=ks, expected_context=CTX)


def test_exported_status_and_end_date_travel_and_import_never_revives(tmp_path: Path) -> None:
    writer = KeyStore.open(tmp_path / "writer")
    old = writer.generate("ed25519")
    live_bundle = writer.export_public(old)
    reader = KeyStore.open(tmp_path / "reader")
    assert reader.import_public(live_bundle) == old
    assert reader.get(old).not_after is None
    writer.promote(writer.generate("ed25519"))
    writer.retire(old, grace=timedelta(days=3))
    reader.import_public(writer.export_public(old))  # the end date travels
    assert reader.get(old).not_after == writer.get(old).not_after
    reader.import_public(live_bundle)  # an older bundle never extends it
    assert reader.get(old).not_after == writer.get(old).not_after
    writer.revoke(old, "insider left")
    reader.import_public(writer.export_public(old))  # the revocation travels
    assert reader.get(old).status is KeyStatus.REVOKED
    with pytest.raises(KeyStoreError, match="refusing to trust it again"):
        reader.import_public(live_bundle)
    assert reader.get(old).status is KeyStatus.REVOKED
    # a fresh reader importing the revoked bundle records the key as revoked
    fresh = KeyStore.open(tmp_path / "fresh")
    fresh.import_public(writer.export_public(old))
    assert fresh.get(old).status is KeyStatus.REVOKED


# --- item 2: after not-after a key verifies nothing; future signed_at refused ---------------------


def test_ended_primary_verifies_nothing_whatever_signed_at(
    tmp_path: Path, alg: str, marker: Path
) -> None:
    clock = Clock()
    ks = KeyStore.open(tmp_path / "keys", clock=clock)
    ks.generate(alg, expires_in=timedelta(days=1))
    # signed_at is inside the key's lifetime: before the fix this verified forever
    data = insider_pickle(ks, marker)
    clock.offset = timedelta(days=2)
    err = refused_and_nothing_ran(data, ks, marker, ExpiredKeyError)
    assert "whatever the envelope's signed_at says" in str(err)


def test_future_signed_at_is_refused(tmp_path: Path, alg: str, marker: Path) -> None:
    ks = KeyStore.open(tmp_path / "keys")
    ks.generate(alg)
    # seal() stamps the real time; a writer whose clock runs ahead is simulated by a reader whose
    # clock runs behind by more than the allowance
    reader = KeyStore.open(ks.path, clock=lambda: datetime.now(UTC) - timedelta(hours=1))
    err = refused_and_nothing_ran(insider_pickle(ks, marker), reader, marker,
                                  MalformedEnvelopeError)
    assert "future" in str(err)
    # within the allowance it verifies
    near = KeyStore.open(ks.path, clock=lambda: datetime.now(UTC) - timedelta(minutes=1))
    assert unseal(seal({"ok": 1}, key_store=ks, context=CTX), key_store=near,
                  expected_context=CTX) == {"ok": 1}


# --- item 3: HMAC secrets from outside the store must be in the key format -----------------------


def test_hmac_passphrase_is_refused_by_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    phrase = "Correct Horse Battery Staple, my dog's name is 1337 & so what?!"
    monkeypatch.setenv("PHRASE_KEY", base64.b64encode(phrase.encode()).decode())
    monkeypatch.setenv("RAW_KEY", base64.b64encode(os.urandom(32)).decode())
    ks = KeyStore.open(tmp_path / "keys")
    for var in ("PHRASE_KEY", "RAW_KEY"):
        with pytest.raises(WeakKeyError) as err:
            ks.load_env_key(var)
        assert "keys generate" in str(err.value) and "export-secret" in str(err.value)
    good = format_hmac_key(os.urandom(32))
    mistyped = good[:-2] + ("AA" if good[-2:] != "AA" else "BB")
    monkeypatch.setenv("TYPO_KEY", mistyped)
    with pytest.raises(WeakKeyError, match="checksum"):
        ks.load_env_key("TYPO_KEY")
    # the key format around a short secret: still refused for its length
    short = os.urandom(16)
    body = short + hashlib.sha256(HMAC_CHECKSUM_TAG + short).digest()[:4]
    monkeypatch.setenv("SHORT_KEY", HMAC_KEY_PREFIX + base64.urlsafe_b64encode(body).decode()
                       .rstrip("="))
    with pytest.raises(WeakKeyError, match="at least 32"):
        ks.load_env_key("SHORT_KEY")


def test_exported_secret_loads_from_env_and_matches_by_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = KeyStore.open(tmp_path / "writer")
    kid = writer.generate("hmac-sha256")
    data = seal({"ok": 1}, key_store=writer, context=CTX, record=False)
    monkeypatch.setenv("SHARED_KEY", writer.export_secret(kid))
    reader = KeyStore.open(tmp_path / "reader")
    env_kid = reader.load_env_key("SHARED_KEY")
    assert env_kid != kid and env_kid.endswith(kid)  # one derivation: same fingerprint digits
    assert unseal(data, key_store=reader, expected_context=CTX) == {"ok": 1}


# --- item 4: ownership and place of the key store ------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_key_store_owned_by_another_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ks = KeyStore.open(tmp_path / "keys")
    kid = ks.generate("ed25519")
    seal({"ok": 1}, key_store=ks, context=CTX)  # creates the ledger
    ks.close()
    for path in (ks.path, ks.path / "private" / f"{kid}.pem", ks.path / "ledger.sqlite3"):
        os.chown(path, OTHER_UID, OTHER_UID)
    # root may open it, with a warning naming the owner
    with pytest.warns(ForeignOwnerWarning, match=str(OTHER_UID)):
        root_view = KeyStore.open(ks.path)
        root_view.signer().sign(b"x")
        root_view.ledger.rows()
    # anyone else is refused, for the folder, the key file and the ledger
    monkeypatch.setattr(os, "geteuid", lambda: OTHER_UID + 1)
    with pytest.raises(KeyPermissionError, match="owned by uid"):
        KeyStore.open(ks.path)
    os.chown(ks.path, OTHER_UID + 1, OTHER_UID + 1)
    with pytest.raises(KeyPermissionError, match="key store file"):
        KeyStore.open(ks.path)
    os.chown(ks.path / "keystore.json", OTHER_UID + 1, OTHER_UID + 1)
    with pytest.raises(KeyPermissionError, match="private key folder"):
        KeyStore.open(ks.path)
    os.chown(ks.path / "private", OTHER_UID + 1, OTHER_UID + 1)
    with pytest.raises(KeyPermissionError, match="private key file"):
        KeyStore.open(ks.path).signer()
    os.chown(ks.path / "private" / f"{kid}.pem", OTHER_UID + 1, OTHER_UID + 1)
    with pytest.raises(KeyPermissionError, match="ledger"):
        KeyStore.open(ks.path).ledger.rows()


def test_key_store_inside_or_around_an_artifact_store(tmp_path: Path) -> None:
    LocalArtifactStore(tmp_path / "shared" / "store")  # creates its index file
    inside = tmp_path / "shared" / "store" / "keys"
    with pytest.raises(KeyStoreError, match="lies inside the artifact store"):
        KeyStore.open(inside)
    assert not inside.exists()  # refused before anything was created
    with pytest.raises(KeyStoreError, match="contains the artifact store"):
        KeyStore.open(tmp_path / "shared")
    KeyStore.open(tmp_path / "keys").generate("ed25519")  # a sibling folder is fine


# --- issue 15 item 7: one key, one fingerprint, whatever id it was given ---------------------------


def test_bare_pem_import_matches_env_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    monkeypatch.setenv("TEAM_A_SIGNING_KEY", private_pem)
    writer = KeyStore.open(tmp_path / "writer")
    env_kid = writer.load_env_key("TEAM_A_SIGNING_KEY")
    data = seal({"team": "a"}, key_store=writer, context=CTX, record=False)
    reader = KeyStore.open(tmp_path / "reader")
    pub_kid = reader.import_public(public_pem)
    assert pub_kid != env_kid  # the ids differ, the fingerprint is the same
    assert unseal(data, key_store=reader, expected_context=CTX) == {"team": "a"}
    # a revocation under either id ends the key under every id
    reader.revoke(pub_kid, "rotated")
    with pytest.raises(RevokedKeyError):
        unseal(data, key_store=reader, expected_context=CTX)


def test_unknown_key_error_names_the_wanted_fingerprint(tmp_path: Path, marker: Path) -> None:
    stranger = KeyStore.open(tmp_path / "stranger")
    kid = stranger.generate("ed25519")
    fp = stranger.get(kid).fingerprint
    reader = KeyStore.open(tmp_path / "reader")
    err = refused_and_nothing_ran(insider_pickle(stranger, marker), reader, marker,
                                  UnknownKeyError)
    assert fp[:16] in str(err) and "fingerprint" in str(err)
    # a key id not derived from a key carries no fingerprint, and the error says so
    legacy = KeyStore.open(tmp_path / "legacy")
    legacy.generate("ed25519")
    raw = (legacy.path / "keystore.json").read_text()
    old_kid = legacy.primary().kid
    for folder, suffix in (("private", ".pem"), ("public", ".pub.pem")):
        (legacy.path / folder / f"{old_kid}{suffix}").rename(
            legacy.path / folder / f"partner-2024{suffix}"
        )
    (legacy.path / "keystore.json").write_text(
        raw.replace(f'"kid": "{old_kid}"', '"kid": "partner-2024"')
    )
    legacy = KeyStore.open(legacy.path)
    err = refused_and_nothing_ran(insider_pickle(legacy, marker), reader, marker,
                                  UnknownKeyError)
    assert "carries no fingerprint" in str(err)


# --- docs/key-management.md's staged rotation, run literally through the console script ----------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "key-management.md"
CONSOLE = Path("/work/main/.venv/bin/dagster-wandb-secure")


def rotation_commands() -> list[str]:
    text = DOCS.read_text()
    block = text[text.index("## Staged rotation") :]
    block = block[block.index("```sh\n") + 6 : block.index("```\n", block.index("```sh\n") + 6)]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


@pytest.mark.skipif(not CONSOLE.exists(), reason="the console script is not installed")
def test_documented_rotation_leaves_the_old_key_verifying_nothing(
    tmp_path: Path, marker: Path
) -> None:
    import shlex
    import subprocess

    from kit.cli import ENTITY, PROJECT, Env

    work = tmp_path / "work"
    work.mkdir()
    writer = KeyStore.open(work / "writer-keys")
    old = writer.generate("ed25519")
    reader = KeyStore.open(work / "reader-keys")
    (work / "OLD.pub.pem").write_bytes(writer.export_public(old))
    reader.import_public((work / "OLD.pub.pem").read_bytes())
    insider = KeyStore.open(shutil.copytree(writer.path, tmp_path / "insider-copy"))
    store = LocalArtifactStore(work / "STORE")
    env = Env(work, writer.path, store.root, writer, store)
    env.publish("kept", {"kept": True})
    env_vars = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                "PATH": f"{CONSOLE.parent}:{os.environ['PATH']}"}
    env_vars.pop("DAGSTER_WANDB_SECURE_KEY_STORE", None)
    new = None
    for line in rotation_commands():
        if new is not None:
            line = line.replace("NEW", new)
        line = line.replace("OLD", old).replace("STORE", str(store.root))
        argv = shlex.split(line)
        assert argv[0] == "dagster-wandb-secure"
        done = subprocess.run(argv, cwd=work, env=env_vars, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, (line, done.stdout, done.stderr)
        if argv[1:3] == ["keys", "generate"]:
            new = done.stdout.split(" key ", 1)[1].split()[0]
    assert new is not None
    writer, reader = KeyStore.open(writer.path), KeyStore.open(reader.path)
    assert writer.primary().kid == new
    for ks in (writer, reader):
        assert ks.get(old).not_after is not None  # ended everywhere
        # an insider who kept the old key signs a pickle today: nobody runs it
        refused_and_nothing_ran(insider_pickle(insider, marker), ks, marker, ExpiredKeyError)
    # the re-signed version verifies on the reader with the new key
    latest = store.resolve(ENTITY, PROJECT, "kept", alias="latest")
    data = store.file_path(latest, "output.pickle").read_bytes()
    ctx = {"artifact": "kept", "type": "dataset", "partition": None, "asset_key": "kept",
           "project": f"{ENTITY}/{PROJECT}"}
    assert unseal(data, key_store=reader, expected_context=ctx) == {"kept": True}
