"""The key store: real folders, real files, real Ed25519/HMAC keys, real processes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import multiprocessing
import os
import random
import signal
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dagster_wandb_secure.core import keys as keys_module
from dagster_wandb_secure.core import keystore_state
from dagster_wandb_secure.core.algorithms import format_hmac_key, parse_hmac_key
from dagster_wandb_secure.core.errors import (
    AlgorithmMismatchError,
    ExpiredKeyError,
    KeyPermissionError,
    KeyStoreError,
    MalformedEnvelopeError,
    NoSigningKeyError,
    RevokedKeyError,
    TamperedPayloadError,
    UnknownKeyError,
    WeakKeyError,
)
from dagster_wandb_secure.core.keys import (
    ALGORITHMS,
    KeyRecord,
    KeyStatus,
    KeyStore,
    SigningKey,
)

MSG = b"dagster-wandb-secure test message"
FORK = multiprocessing.get_context("fork")


def now() -> datetime:
    return datetime.now(UTC)


def verify(ks: KeyStore, kid: str, alg: str, sig: bytes, *, msg: bytes = MSG, at=None, **kw):
    return ks.verify(kid=kid, alg=alg, message=msg, signature=sig, signed_at=at or now(), **kw)


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore.open(tmp_path / "ks")


@pytest.fixture(params=ALGORITHMS)
def alg(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- generation, layout, sign/verify -------------------------------------------------------------


def test_open_creates_private_layout(tmp_path: Path) -> None:
    ks = KeyStore.open(tmp_path / "a" / "ks")
    assert mode(ks.path) == 0o700
    assert mode(ks.path / "private") == 0o700
    doc = json.loads((ks.path / "keystore.json").read_text())
    assert doc == {"format": "dagster-wandb-secure/keystore", "version": 1, "keys": []}
    assert ks.records() == []
    with pytest.raises(NoSigningKeyError):
        ks.primary()
    with pytest.raises(NoSigningKeyError):
        ks.signer()


def test_open_without_create(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="no key store"):
        KeyStore.open(tmp_path / "missing", create=False)
    (tmp_path / "empty").mkdir(mode=0o700)
    with pytest.raises(KeyStoreError, match="keystore.json"):
        KeyStore.open(tmp_path / "empty", create=False)
    assert not (tmp_path / "missing").exists()


def test_existing_loose_folder_is_tightened_on_init(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    folder.mkdir()
    folder.chmod(0o755)
    (folder / "README.md").write_text("docs")
    ks = KeyStore.open(folder)
    assert mode(folder) == 0o700
    ks.generate("ed25519")
    assert (folder / "README.md").read_text() == "docs"


def test_generate_both_algorithms(store: KeyStore) -> None:
    ed = store.generate("ed25519")
    hm = store.generate("hmac-sha256")
    assert ed != hm
    for kid in (ed, hm):
        assert keys_module.KID_RE.fullmatch(kid) and len(kid) == 16
    r_ed, r_hm = store.get(ed), store.get(hm)
    assert isinstance(r_ed, KeyRecord)
    assert r_ed.status is KeyStatus.PRIMARY  # the first key
    assert r_hm.status is KeyStatus.VERIFY_ONLY  # later ones until promoted
    assert (r_ed.alg, r_hm.alg) == ("ed25519", "hmac-sha256")
    assert r_ed.has_private and r_hm.has_private
    assert r_ed.origin == r_hm.origin == "generated"
    assert r_ed.created_at.tzinfo is not None and r_ed.not_after is None
    assert [r.kid for r in store.records()] == [ed, hm]
    assert store.primary().kid == ed

    pem = store.path / "private" / f"{ed}.pem"
    secret_file = store.path / "private" / f"{hm}.hmac"
    pub = store.path / "public" / f"{ed}.pub.pem"
    assert mode(pem) == 0o600 and mode(secret_file) == 0o600 and mode(pub) == 0o644
    assert pem.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert not (store.path / "public" / f"{hm}.pub.pem").exists()
    # fingerprints: raw public key for ed25519; a tagged hash (never the bare secret) for hmac
    public = serialization.load_pem_public_key(pub.read_bytes())
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert r_ed.fingerprint == hashlib.sha256(raw).hexdigest()
    assert secret_file.read_bytes().startswith(b"dws-hmac-sha256-v1:")  # the key format
    secret = parse_hmac_key(secret_file.read_bytes(), where="test")
    assert len(secret) >= 32
    assert r_hm.fingerprint != hashlib.sha256(secret).hexdigest()
    assert r_hm.fingerprint == hashlib.sha256(keys_module.HMAC_FINGERPRINT_TAG + secret).hexdigest()


def test_sign_and_verify_round_trip(store: KeyStore, alg: str) -> None:
    kid = store.generate(alg)
    signer = store.signer()
    assert isinstance(signer, SigningKey)
    assert (signer.kid, signer.alg) == (kid, alg)
    assert store.signer(kid).kid == kid
    sig = signer.sign(MSG)
    assert len(sig) == keys_module.SIGNATURE_LENGTH[alg]
    assert verify(store, kid, alg, sig) == store.get(kid)
    assert verify(store, kid, alg, bytearray(sig), msg=memoryview(MSG)).kid == kid
    assert kid not in repr(signer) or "secret" not in repr(signer).lower()


def test_tampered_message_or_signature(store: KeyStore, alg: str) -> None:
    kid = store.generate(alg)
    sig = store.signer().sign(MSG)
    with pytest.raises(TamperedPayloadError) as err:
        verify(store, kid, alg, sig, msg=MSG + b"!", artifact="model")
    assert "model" in str(err.value) and kid in str(err.value)
    for i in (0, len(sig) // 2, len(sig) - 1):
        flipped = bytearray(sig)
        flipped[i] ^= 0x01
        with pytest.raises(TamperedPayloadError):
            verify(store, kid, alg, bytes(flipped))
    for bad in (b"", sig[:-1], sig + b"\0", b"\0" * 64 if alg == "hmac-sha256" else b"\0" * 32):
        with pytest.raises(TamperedPayloadError, match="not .* bytes"):
            verify(store, kid, alg, bad)
    with pytest.raises(TamperedPayloadError):
        verify(store, kid, alg, "not bytes")  # type: ignore[arg-type]
    with pytest.raises(KeyStoreError, match="signed_at must be a datetime"):
        verify(store, kid, alg, sig, at="2024-01-01T00:00:00Z")


def test_trusted_kid_signed_by_another_key(tmp_path: Path, alg: str) -> None:
    ours = KeyStore.open(tmp_path / "ours")
    theirs = KeyStore.open(tmp_path / "theirs")
    kid = ours.generate(alg)
    theirs.generate(alg)
    forged = theirs.signer().sign(MSG)
    with pytest.raises(TamperedPayloadError):
        verify(ours, kid, alg, forged)
    with pytest.raises(UnknownKeyError):  # their kid means nothing here
        verify(ours, theirs.primary().kid, alg, forged)


# --- algorithms ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header_alg",
    [
        "none",
        "NONE",
        "noNE",
        "",
        "ED25519",
        "Ed25519",
        "HMAC-SHA256",
        "hs256",
        "ed25519 ",
        "rsa",
        None,
        1,
    ],
)
def test_algorithm_allow_list_is_exact(store: KeyStore, header_alg: object) -> None:
    kid = store.generate("ed25519")
    sig = store.signer().sign(MSG)
    with pytest.raises(AlgorithmMismatchError):
        verify(store, kid, header_alg, sig)  # type: ignore[arg-type]
    with pytest.raises(AlgorithmMismatchError):
        verify(store, kid, header_alg, b"")  # type: ignore[arg-type]


def test_generate_refuses_unknown_algorithm(store: KeyStore) -> None:
    for bad in ("none", "ED25519", "rsa", ""):
        with pytest.raises(AlgorithmMismatchError):
            store.generate(bad)
    assert store.records() == []


def test_algorithm_confusion(store: KeyStore) -> None:
    """Header says HMAC for an Ed25519 kid, signed with the PUBLIC key bytes as HMAC secret."""
    ed = store.generate("ed25519")
    hm = store.generate("hmac-sha256")
    public_pem = (store.path / "public" / f"{ed}.pub.pem").read_bytes()
    public_raw = serialization.load_pem_public_key(public_pem).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    for secret in (public_pem, public_raw):
        forged = hmac.new(secret, MSG, hashlib.sha256).digest()
        with pytest.raises(AlgorithmMismatchError) as err:
            verify(store, ed, "hmac-sha256", forged)
        assert "bound to ed25519" in str(err.value)
    # and the other way round: an ed25519 header for an HMAC kid
    other = Ed25519PrivateKey.generate().sign(MSG)
    with pytest.raises(AlgorithmMismatchError):
        verify(store, hm, "ed25519", other)


# --- key ids -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kid",
    [
        "../../x",
        "/etc/passwd",
        "a/b",
        "..",
        "",
        "A1B2",
        "-abc",
        "abc\n",
        "abc\x00",
        "k" * 65,
        "k" * 100_000,
        "ключ",
        "kid\u202e",
        "' OR 1=1 --",
        None,
        42,
        b"abc",
    ],
)
def test_malformed_key_ids_fail_closed(store: KeyStore, tmp_path: Path, kid: object) -> None:
    store.generate("hmac-sha256")
    sig = store.signer().sign(MSG)
    with pytest.raises(UnknownKeyError) as err:
        verify(store, kid, "hmac-sha256", sig, artifact="art")  # type: ignore[arg-type]
    text = str(err.value)
    assert len(text) < 1000  # huge ids are truncated
    assert text.isascii()  # non-ASCII ids are escaped
    assert "art" in text
    with pytest.raises(UnknownKeyError):
        store.get(kid)  # type: ignore[arg-type]
    for op in (store.promote, store.retire, store.destroy, store.export_public):
        with pytest.raises(UnknownKeyError):
            op(kid)  # type: ignore[arg-type]
    with pytest.raises(UnknownKeyError):
        store.revoke(kid, "x")  # type: ignore[arg-type]
    if kid is not None:  # signer(None) means "the primary"
        with pytest.raises(UnknownKeyError):
            store.signer(kid)  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()


def test_unknown_but_well_formed_key_id(store: KeyStore) -> None:
    store.generate("ed25519")
    with pytest.raises(UnknownKeyError, match="0123456789abcdef"):
        verify(store, "0123456789abcdef", "ed25519", b"\0" * 64)
    with pytest.raises(UnknownKeyError):
        store.get("0123456789abcdef")
    with pytest.raises(NoSigningKeyError):
        store.signer("0123456789abcdef")


# --- status rules --------------------------------------------------------------------------------


def test_promote_and_retire(store: KeyStore, alg: str) -> None:
    first = store.generate(alg)
    second = store.generate(alg)
    old_sig = store.signer().sign(MSG)
    with pytest.raises(NoSigningKeyError, match="only the primary signs"):
        store.signer(second)
    store.promote(second)
    assert store.primary().kid == second
    assert store.get(first).status is KeyStatus.VERIFY_ONLY
    assert store.signer().kid == second
    assert verify(store, first, alg, old_sig).kid == first  # verify-only still verifies
    with pytest.raises(NoSigningKeyError):
        store.signer(first)
    with pytest.raises(KeyStoreError, match="promote another key first"):
        store.retire(second)
    store.retire(first)  # already verify-only: no-op
    store.promote(second)  # already primary: no-op
    assert [r.status for r in store.records()] == [KeyStatus.VERIFY_ONLY, KeyStatus.PRIMARY]


def test_revoke(store: KeyStore, alg: str) -> None:
    kid = store.generate(alg)
    sig = store.signer().sign(MSG)
    store.revoke(kid, "laptop stolen")
    record = store.get(kid)
    assert record.status is KeyStatus.REVOKED and record.revoked_reason == "laptop stolen"
    with pytest.raises(RevokedKeyError, match="laptop stolen"):
        verify(store, kid, alg, sig)
    with pytest.raises(NoSigningKeyError):
        store.signer()
    with pytest.raises(KeyStoreError, match="can never sign again"):
        store.promote(kid)
    with pytest.raises(KeyStoreError, match="cannot be brought back"):
        store.retire(kid)
    with pytest.raises(KeyStoreError, match="reason"):
        store.revoke(kid, "  ")
    new = store.generate(alg)  # no primary left: the new key becomes primary
    assert store.primary().kid == new


def test_destroy(store: KeyStore, alg: str) -> None:
    kid = store.generate(alg)
    keep = store.generate(alg)
    sig = store.signer().sign(MSG)
    suffix = ".pem" if alg == "ed25519" else ".hmac"
    private = store.path / "private" / f"{kid}{suffix}"
    assert private.exists()
    store.promote(keep)
    store.destroy(kid)
    assert not private.exists()
    record = store.get(kid)
    assert record.status is KeyStatus.DESTROYED and not record.has_private
    with pytest.raises(RevokedKeyError, match="destroyed"):
        verify(store, kid, alg, sig)
    with pytest.raises(KeyStoreError):
        store.promote(kid)
    with pytest.raises(KeyStoreError, match="destroyed"):
        store.revoke(kid, "too late")
    store.destroy(kid)  # idempotent


# --- expiry --------------------------------------------------------------------------------------


def test_expiry_rules(tmp_path: Path, alg: str) -> None:
    clock = Clock()
    store = KeyStore.open(tmp_path / "ks", clock=clock)
    kid = store.generate(alg, expires_in=timedelta(days=30))
    record = store.get(kid)
    assert record.not_after is not None
    assert record.not_after - record.created_at == timedelta(days=30)
    signer = store.signer()
    early = now() + timedelta(minutes=1)  # within the clock-skew allowance
    sig = signer.sign(MSG)
    assert verify(store, kid, alg, sig, at=early).kid == kid
    # an envelope claiming to be signed after not_after is refused
    with pytest.raises(ExpiredKeyError, match="after key"):
        verify(store, kid, alg, sig, at=record.not_after + timedelta(seconds=1))
    # a naive signed_at is read as UTC
    naive_late = (record.not_after + timedelta(hours=1)).replace(tzinfo=None)
    with pytest.raises(ExpiredKeyError):
        verify(store, kid, alg, sig, at=naive_late)

    # a signed_at further in the future than the clock-skew allowance is refused
    with pytest.raises(MalformedEnvelopeError, match="future"):
        verify(store, kid, alg, sig, at=now() + timedelta(days=1))

    clock.offset = timedelta(days=31)  # the primary is now past not_after
    with pytest.raises(NoSigningKeyError, match="expired"):
        store.signer()
    # ... and verifies nothing any more, even what it signed in time (issue 11, item 2)
    with pytest.raises(ExpiredKeyError, match="verifies nothing"):
        verify(store, kid, alg, sig, at=early)
    with pytest.raises(KeyStoreError, match="expired"):
        store.promote(kid)

    new = store.rotate()
    assert store.get(new).alg == alg and store.get(kid).status is KeyStatus.VERIFY_ONLY
    # a verify-only key past not_after verifies nothing, whatever signed_at says
    with pytest.raises(ExpiredKeyError, match="verifies nothing"):
        verify(store, kid, alg, sig, at=early)


def test_expires_in_must_be_positive(store: KeyStore) -> None:
    for bad in (timedelta(0), timedelta(seconds=-1), 5):
        with pytest.raises(KeyStoreError, match="positive"):
            store.generate("ed25519", expires_in=bad)  # type: ignore[arg-type]


def test_retired_key_within_grace_period(tmp_path: Path, alg: str) -> None:
    clock = Clock()
    store = KeyStore.open(tmp_path / "ks", clock=clock)
    old = store.generate(alg)
    sig = store.signer().sign(MSG)
    new = store.rotate(grace=timedelta(days=7))
    assert store.signer().kid == new
    retired = store.get(old)
    assert retired.status is KeyStatus.VERIFY_ONLY and retired.not_after is not None
    assert verify(store, old, alg, sig).kid == old
    clock.offset = timedelta(days=8)
    with pytest.raises(ExpiredKeyError):
        verify(store, old, alg, sig)
    assert verify(store, new, alg, store.signer().sign(MSG)).kid == new


# --- rotation ------------------------------------------------------------------------------------


def test_rotate_is_one_replace(store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    old = store.generate("ed25519")
    writes: list[str] = []
    real = keys_module.atomic_write

    def spy(path, data, *, mode=0o644):  # type: ignore[no-untyped-def]
        writes.append(Path(path).name)
        return real(path, data, mode=mode)

    monkeypatch.setattr(keys_module, "atomic_write", spy)
    new = store.rotate()
    # private, public, then ONE keystore.json replace carrying both status changes
    assert writes == [f"{new}.pem", f"{new}.pub.pem", "keystore.json"]
    assert store.primary().kid == new
    assert store.get(old).status is KeyStatus.VERIFY_ONLY
    with pytest.raises(KeyStoreError, match="algorithm"):
        KeyStore.open(store.path.parent / "empty").rotate()


def test_rotate_to_other_algorithm(store: KeyStore) -> None:
    store.generate("ed25519")
    new = store.rotate("hmac-sha256", expires_in=timedelta(days=1))
    record = store.get(new)
    assert record.alg == "hmac-sha256" and record.status is KeyStatus.PRIMARY
    assert record.not_after is not None


def test_long_lived_store_sees_another_process_rotate(store: KeyStore, alg: str) -> None:
    first = store.generate(alg)
    assert store.signer().kid == first
    proc = FORK.Process(target=_rotate_once, args=(str(store.path),))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    new = store.primary().kid
    assert new != first
    assert store.signer().kid == new
    assert store.get(first).status is KeyStatus.VERIFY_ONLY


def _rotate_once(path: str) -> None:
    KeyStore.open(path).rotate()


def _rotate_forever(path: str, count: int) -> None:
    ks = KeyStore.open(path)
    for _ in range(count):
        ks.rotate()


def test_rotate_atomicity_under_concurrent_readers(store: KeyStore) -> None:
    store.generate("hmac-sha256")
    proc = FORK.Process(target=_rotate_forever, args=(str(store.path), 40))
    proc.start()
    reader = KeyStore.open(store.path)
    seen = set()
    try:
        while proc.is_alive():
            doc = json.loads((store.path / "keystore.json").read_bytes())  # never torn
            assert sum(k["status"] == "primary" for k in doc["keys"]) == 1
            signer = reader.signer()  # the long-lived reader always finds one primary
            seen.add(signer.kid)
            sig = signer.sign(MSG)
            assert reader.verify(
                kid=signer.kid, alg=signer.alg, message=MSG, signature=sig, signed_at=now()
            )
    finally:
        proc.join(60)
    assert proc.exitcode == 0
    records = KeyStore.open(store.path).records()
    assert len(records) == 41
    assert sum(r.status is KeyStatus.PRIMARY for r in records) == 1
    assert len(seen) > 1


def test_sigkill_during_rotation_leaves_a_loadable_store(store: KeyStore) -> None:
    store.generate("ed25519")
    rng = random.Random(1234)
    for _ in range(6):
        proc = FORK.Process(target=_rotate_forever, args=(str(store.path), 10_000))
        proc.start()
        time.sleep(rng.uniform(0.05, 0.25))
        os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
        proc.join(10)
        assert proc.exitcode == -signal.SIGKILL
        ks = KeyStore.open(store.path)
        records = ks.records()
        assert sum(r.status is KeyStatus.PRIMARY for r in records) == 1
        for r in records:  # every referenced key file exists (material is written first)
            assert (ks.path / "private" / f"{r.kid}.pem").exists()
            assert (ks.path / "public" / f"{r.kid}.pub.pem").exists()
        signer = ks.signer()
        sig = signer.sign(MSG)
        assert verify(ks, signer.kid, signer.alg, sig).kid == signer.kid
    # orphans (material written, record never committed) and temp files are cleanable
    removed = KeyStore.open(store.path).cleanup_orphans()
    kids = {r.kid for r in KeyStore.open(store.path).records()}
    assert all(p.name.split(".")[0] not in kids or p.name.startswith(".") for p in removed)
    for folder in ("private", "public"):
        for p in (store.path / folder).iterdir():
            assert p.name.split(".")[0] in kids


# --- concurrency ---------------------------------------------------------------------------------


def _generate_many(path: str, count: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    ks = KeyStore.open(path)
    queue.put([ks.generate("hmac-sha256") for _ in range(count)])


def test_two_processes_generating_lose_nothing(store: KeyStore) -> None:
    queue = FORK.Queue()
    procs = [
        FORK.Process(target=_generate_many, args=(str(store.path), 20, queue)) for _ in range(2)
    ]
    for p in procs:
        p.start()
    made = queue.get(timeout=60) + queue.get(timeout=60)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    records = store.records()
    assert len(made) == len(set(made)) == 40
    assert sorted(r.kid for r in records) == sorted(made)
    assert sum(r.status is KeyStatus.PRIMARY for r in records) == 1
    for kid in made:
        assert (store.path / "private" / f"{kid}.hmac").exists()


# --- permissions and weak material ---------------------------------------------------------------


def test_private_file_readable_by_others_is_refused(tmp_path: Path, alg: str) -> None:
    store = KeyStore.open(tmp_path / "ks")
    kid = store.generate(alg)
    suffix = ".pem" if alg == "ed25519" else ".hmac"
    private = store.path / "private" / f"{kid}{suffix}"
    private.chmod(0o644)
    fresh = KeyStore.open(store.path)
    with pytest.raises(KeyPermissionError) as err:
        fresh.signer()
    assert f"chmod 600 {private}" in str(err.value)
    # a cached key is refused too once the file becomes readable
    private.chmod(0o600)
    signer = store.signer()
    private.chmod(0o640)
    with pytest.raises(KeyPermissionError):
        store.signer()
    private.chmod(0o600)
    assert store.signer().kid == signer.kid


def test_private_folder_or_store_readable_by_others_is_refused(tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path / "ks")
    store.generate("ed25519")
    (store.path / "private").chmod(0o755)
    with pytest.raises(KeyPermissionError, match=f"chmod 700 {store.path / 'private'}"):
        KeyStore.open(store.path)
    (store.path / "private").chmod(0o700)
    store.path.chmod(0o750)
    with pytest.raises(KeyPermissionError, match=f"chmod 700 {store.path}"):
        KeyStore.open(store.path)
    store.path.chmod(0o777)
    with pytest.raises(KeyPermissionError, match="writable by group or others"):
        KeyStore.open(store.path)
    store.path.chmod(0o700)
    assert KeyStore.open(store.path).signer()


def test_symlinked_private_key_is_refused(tmp_path: Path) -> None:
    store = KeyStore.open(tmp_path / "ks")
    kid = store.generate("hmac-sha256")
    private = store.path / "private" / f"{kid}.hmac"
    real = tmp_path / "elsewhere.hmac"
    real.write_bytes(private.read_bytes())
    real.chmod(0o600)
    private.unlink()
    private.symlink_to(real)
    with pytest.raises(KeyPermissionError, match="symlink"):
        KeyStore.open(store.path).signer()


def test_short_or_patterned_hmac_file_is_weak(store: KeyStore) -> None:
    kid = store.generate("hmac-sha256")
    path = store.path / "private" / f"{kid}.hmac"
    for weak in (os.urandom(16), b"a" * 40):
        path.write_bytes(base64.b64encode(weak))
        path.chmod(0o600)
        os.utime(path, ns=(1, time.time_ns()))
        with pytest.raises(WeakKeyError):
            KeyStore.open(store.path).signer()


def test_replaced_key_file_is_detected(store: KeyStore) -> None:
    kid = store.generate("hmac-sha256")
    path = store.path / "private" / f"{kid}.hmac"
    path.write_bytes(base64.b64encode(os.urandom(32)))
    with pytest.raises(KeyStoreError, match="fingerprint mismatch"):
        KeyStore.open(store.path).signer()


def test_corrupt_keystore_json_is_a_typed_error(store: KeyStore) -> None:
    kid = store.generate("ed25519")
    path = store.path / "keystore.json"
    good = path.read_bytes()
    doc = json.loads(good)
    bad_docs = [
        b"{",
        b"[]",
        good.replace(b'"version": 1', b'"version": 99'),
        good.replace(b'"ed25519"', b'"none"'),
        good.replace(kid.encode(), b"../../etc"),
        json.dumps({**doc, "keys": doc["keys"] * 2}).encode(),
        b'{"format": "dagster-wandb-secure/keystore", "format": "x", "version": 1, "keys": []}',
        json.dumps({**doc, "keys": [{**doc["keys"][0], "extra": 1}]}).encode(),
    ]
    for raw in bad_docs:
        path.write_bytes(raw)
        with pytest.raises(KeyStoreError, match="corrupt"):
            KeyStore.open(store.path)
    path.write_bytes(good)
    assert KeyStore.open(store.path).get(kid).kid == kid


# --- passphrase-encrypted PEM --------------------------------------------------------------------


def test_encrypted_pem_with_passphrase_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KS_PASS", "correct horse battery staple")
    store = KeyStore.open(tmp_path / "ks")
    kid = store.generate("ed25519", passphrase_env="KS_PASS")
    assert store.get(kid).passphrase_env == "KS_PASS"
    pem = (store.path / "private" / f"{kid}.pem").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert b"correct horse" not in pem
    sig = store.signer().sign(MSG)
    assert verify(store, kid, "ed25519", sig).kid == kid

    monkeypatch.delenv("KS_PASS")
    with pytest.raises(KeyStoreError, match="KS_PASS is not set") as err:
        KeyStore.open(store.path).signer()
    assert "correct horse" not in str(err.value)
    # verification needs only the public key, no passphrase
    assert verify(KeyStore.open(store.path), kid, "ed25519", sig).kid == kid
    monkeypatch.setenv("KS_PASS", "wrong")
    with pytest.raises(KeyStoreError, match="wrong passphrase in \\$KS_PASS"):
        KeyStore.open(store.path).signer()


def test_passphrase_env_rules(store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KeyStoreError, match="NOPE_UNSET is not set"):
        store.generate("ed25519", passphrase_env="NOPE_UNSET")
    monkeypatch.setenv("KS_PASS", "x" * 40)
    with pytest.raises(KeyStoreError, match="only ed25519"):
        store.generate("hmac-sha256", passphrase_env="KS_PASS")
    with pytest.raises(KeyStoreError, match="invalid passphrase environment variable name"):
        store.generate("ed25519", passphrase_env="not a name; rm -rf /")
    assert store.records() == []


# --- environment keys ----------------------------------------------------------------------------


def _pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def test_env_ed25519_writer_and_public_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Ed25519PrivateKey.generate()
    monkeypatch.setenv("SIGNING_KEY", _pem(key))
    writer = KeyStore.open(tmp_path / "writer")
    before = sorted(p.name for p in writer.path.rglob("*"))
    kid = writer.load_env_key("SIGNING_KEY")
    assert kid.startswith("env-") and len(kid) == 20
    record = writer.get(kid)
    assert record.origin == "env" and record.status is KeyStatus.PRIMARY and record.has_private
    assert writer.primary().kid == kid
    sig = writer.signer().sign(MSG)
    assert verify(writer, kid, "ed25519", sig).kid == kid
    assert sorted(p.name for p in writer.path.rglob("*")) == before  # nothing written
    assert writer.load_env_key("SIGNING_KEY") == kid  # deterministic

    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    monkeypatch.setenv("TRUSTED_KEY", public.decode())
    reader = KeyStore.open(tmp_path / "reader")
    assert reader.load_env_key("TRUSTED_KEY") == kid  # same kid as the writer's
    assert reader.get(kid).status is KeyStatus.VERIFY_ONLY
    assert verify(reader, kid, "ed25519", sig).kid == kid
    with pytest.raises(NoSigningKeyError):
        reader.signer()
    with pytest.raises(NoSigningKeyError):
        reader.signer(kid)
    with pytest.raises(KeyStoreError, match="environment"):
        writer.revoke(kid, "x")


def test_env_hmac_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = os.urandom(32)
    monkeypatch.setenv("HMAC_KEY", format_hmac_key(secret) + "\n")
    store = KeyStore.open(tmp_path / "ks")
    store.generate("ed25519")  # the store has its own primary...
    kid = store.load_env_key("HMAC_KEY")
    assert (
        kid == "env-" + hashlib.sha256(keys_module.HMAC_FINGERPRINT_TAG + secret).hexdigest()[:16]
    )
    signer = store.signer()  # ...but the env key signs in this process
    assert signer.kid == kid and signer.alg == "hmac-sha256"
    assert signer.sign(MSG) == hmac.new(secret, MSG, hashlib.sha256).digest()
    assert verify(store, kid, "hmac-sha256", signer.sign(MSG)).kid == kid
    assert kid in [r.kid for r in store.records()]
    assert KeyStore.open(store.path).primary().kid != kid  # memory only
    # bare base64 (the old form) is refused: only the key format is a key
    monkeypatch.setenv("HMAC_KEY2", base64.urlsafe_b64encode(os.urandom(48)).decode().rstrip("="))
    with pytest.raises(WeakKeyError, match="keys export-secret"):
        store.load_env_key("HMAC_KEY2")


def test_env_key_errors_never_echo_the_value(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(KeyStoreError, match="ABSENT_VAR is not set"):
        store.load_env_key("ABSENT_VAR")
    monkeypatch.setenv("EMPTY_VAR", "  ")
    with pytest.raises(KeyStoreError, match="EMPTY_VAR"):
        store.load_env_key("EMPTY_VAR")
    cases = {
        "SHORT": base64.b64encode(b"s3cr3t-value-16b").decode(),
        "PASSPHRASE": "hunter2 is my password!",
        "PATTERN": base64.b64encode(b"hunter2" * 8).decode(),
    }
    for var, value in cases.items():
        monkeypatch.setenv(var, value)
        with pytest.raises(WeakKeyError) as err:
            store.load_env_key(var)
        assert var in str(err.value)
        assert value not in str(err.value) and "hunter2" not in str(err.value)
    monkeypatch.setenv(
        "ENC",
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
        .decode(),
    )
    with pytest.raises(KeyStoreError, match="encrypted"):
        store.load_env_key("ENC")
    monkeypatch.setenv(
        "GARBAGE_PEM", "-----BEGIN PRIVATE KEY-----\nzzzz\n-----END PRIVATE KEY-----"
    )
    with pytest.raises(KeyStoreError, match="cannot be parsed"):
        store.load_env_key("GARBAGE_PEM")
    with pytest.raises(KeyStoreError, match="invalid"):
        store.load_env_key("$(reboot)")


def test_env_key_revoked_in_store_cannot_sign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Ed25519PrivateKey.generate()
    monkeypatch.setenv("SIGNING_KEY", _pem(key))
    writer = KeyStore.open(tmp_path / "w")
    kid = writer.load_env_key("SIGNING_KEY")
    bundle = writer.export_public(kid)
    reader = KeyStore.open(tmp_path / "r")
    assert reader.import_public(bundle) == kid
    reader.revoke(kid, "leaked")
    assert reader.load_env_key("SIGNING_KEY") == kid
    sig = reader.signer  # the store's revocation wins over the environment
    with pytest.raises(NoSigningKeyError, match="revoked"):
        sig()
    with pytest.raises(RevokedKeyError):
        verify(reader, kid, "ed25519", key.sign(MSG))


# --- export / import of public keys --------------------------------------------------------------


def test_export_import_public_round_trip(tmp_path: Path) -> None:
    writer = KeyStore.open(tmp_path / "writer")
    kid = writer.generate("ed25519", expires_in=timedelta(days=90))
    bundle = writer.export_public(kid)
    text = bundle.decode()
    assert f"# kid: {kid}" in text and "# alg: ed25519" in text
    assert "PRIVATE" not in text
    serialization.load_pem_public_key(bundle)  # still a plain PEM to other tools

    reader = KeyStore.open(tmp_path / "reader")
    assert reader.import_public(bundle) == kid  # the writer's kid, so headers match
    record = reader.get(kid)
    assert record.status is KeyStatus.VERIFY_ONLY and not record.has_private
    assert record.origin == "imported-public"
    assert record.fingerprint == writer.get(kid).fingerprint
    assert record.not_after == writer.get(kid).not_after
    assert not list((reader.path / "private").iterdir())
    sig = writer.signer().sign(MSG)
    assert verify(reader, kid, "ed25519", sig).kid == kid
    with pytest.raises(TamperedPayloadError):
        verify(reader, kid, "ed25519", sig, msg=MSG + b"x")
    with pytest.raises(NoSigningKeyError):
        reader.signer()
    with pytest.raises(NoSigningKeyError):
        reader.signer(kid)
    with pytest.raises(KeyStoreError, match="public key only"):
        reader.promote(kid)
    with pytest.raises(KeyStoreError):
        reader.rotate()
    assert reader.import_public(bundle) == kid  # idempotent
    assert len(reader.records()) == 1
    # the reader can re-export what it trusts, to pass it on
    assert KeyStore.open(tmp_path / "third").import_public(reader.export_public(kid)) == kid


def test_import_bare_pem_and_refusals(tmp_path: Path, store: KeyStore) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    kid = store.import_public(pem)
    fp = store.get(kid).fingerprint
    assert kid == "pub-" + fp[:16]
    assert verify(store, kid, "ed25519", key.sign(MSG)).kid == kid
    other = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert store.import_public(other, kid="partner-2024") == "partner-2024"

    with pytest.raises(KeyStoreError, match="private key"):
        store.import_public(_pem(key).encode())
    with pytest.raises(KeyStoreError):
        store.import_public(b"not a pem")
    with pytest.raises(KeyStoreError, match="reserved prefix"):
        store.import_public(other, kid="pub-0000000000000000")
    with pytest.raises(UnknownKeyError):
        store.import_public(other, kid="../evil")

    writer = KeyStore.open(tmp_path / "w")
    wkid = writer.generate("ed25519")
    bundle = writer.export_public(wkid)
    # same kid, another key: a conflict, never a silent replacement
    evil = bundle.replace(bundle[bundle.index(b"-----BEGIN") :], other).replace(
        writer.get(wkid).fingerprint.encode(), b"0" * 64
    )
    with pytest.raises(KeyStoreError, match="fingerprint does not match"):
        store.import_public(evil)
    store.import_public(bundle)
    forged = bundle[: bundle.index(b"# fingerprint")] + other
    with pytest.raises(KeyStoreError, match="lacks fingerprint"):
        store.import_public(forged)
    w2 = KeyStore.open(tmp_path / "w2")
    k2 = w2.generate("ed25519")
    clash = w2.export_public(k2).replace(b"# kid: " + k2.encode(), b"# kid: " + wkid.encode())
    with pytest.raises(KeyStoreError, match="already bound to another key"):
        store.import_public(clash)
    for mangled in (
        bundle.replace(b"# alg: ed25519", b"# alg: hmac-sha256"),
        bundle.replace(f"# kid: {wkid}".encode(), b"# kid: ../../x"),
        bundle.replace(b"# created_at", b"# whatever"),
        b"junk\n" + bundle,
        bundle + b"trailing",
        bundle + other,
    ):
        with pytest.raises((KeyStoreError, UnknownKeyError, AlgorithmMismatchError)):
            store.import_public(mangled)
    store.revoke(wkid, "compromised")
    with pytest.raises(KeyStoreError, match="refusing to trust it again"):
        store.import_public(bundle)


def test_export_public_refusals(store: KeyStore) -> None:
    hm = store.generate("hmac-sha256")
    with pytest.raises(KeyStoreError, match="no public half"):
        store.export_public(hm)
    ed = store.generate("ed25519")
    store.revoke(ed, "gone")
    # a revoked key is exported with its status, so readers learn of the revocation
    assert b"# status: revoked" in store.export_public(ed)


# --- caching / performance -----------------------------------------------------------------------


def test_hot_path_does_not_reload_keys(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch, alg: str
) -> None:
    store.generate(alg)
    signer = store.signer()
    sig = signer.sign(MSG)
    verify(store, signer.kid, alg, sig)

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("key material re-read on the hot path")

    monkeypatch.setattr(keys_module.serialization, "load_pem_private_key", boom)
    monkeypatch.setattr(keys_module.serialization, "load_pem_public_key", boom)
    monkeypatch.setattr(keys_module, "_parse_store", boom)
    monkeypatch.setattr(keystore_state, "parse_store", boom)
    monkeypatch.setattr(keys_module, "_decode_b64_secret", boom)
    for _ in range(50):  # any re-read of key material or keystore.json parse raises above
        s = store.signer()
        store.verify(kid=s.kid, alg=s.alg, message=MSG, signature=s.sign(MSG), signed_at=now())


def test_promote_by_another_object_is_seen_immediately(store: KeyStore) -> None:
    a = store.generate("hmac-sha256")
    b = store.generate("hmac-sha256")
    other = KeyStore.open(store.path)
    assert store.signer().kid == a
    for _ in range(5):  # rapid changes keeping keystore.json the same size
        other.promote(b)
        assert store.signer().kid == b
        other.promote(a)
        assert store.signer().kid == a


def test_store_reads_keystore_once_per_change(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.generate("hmac-sha256")
    store.primary()
    calls = []
    real = keystore_state.parse_store
    monkeypatch.setattr(
        keystore_state, "parse_store", lambda raw, where: calls.append(1) or real(raw, where)
    )
    for _ in range(100):
        store.primary()
    assert len(calls) == 0
    KeyStore.open(store.path).generate("ed25519")
    calls.clear()
    for _ in range(100):
        store.records()
    assert len(calls) == 1


def test_cleanup_orphans(store: KeyStore) -> None:
    ed = store.generate("ed25519")
    hm = store.generate("hmac-sha256")
    gone = store.generate("hmac-sha256")
    store.destroy(gone)
    private, public = store.path / "private", store.path / "public"
    orphans = [
        private / "deadbeefdeadbeef.pem",  # material written, record never committed
        public / "deadbeefdeadbeef.pub.pem",
        private / f".{ed}.pem.abc.tmp",  # an interrupted atomic write
        private / f"{hm}.pem",  # wrong kind of file for this key
        private / f"{gone}.hmac",  # a destroyed key's file (crash before the unlink)
        store.path / ".keystore.json.xyz.tmp",
    ]
    for path in orphans:
        path.write_bytes(b"x")
    removed = store.cleanup_orphans()
    assert sorted(removed) == sorted(orphans)
    assert sorted(p.name for p in private.iterdir()) == sorted([f"{ed}.pem", f"{hm}.hmac"])
    assert [p.name for p in public.iterdir()] == [f"{ed}.pub.pem"]
    assert store.signer().kid == ed
