"""Crash safety (SECURITY.md attack catalogue item 15): SIGKILL at each step.

``kill_at_each_step`` runs an operation in a forked child that SIGKILLs itself just before its
N-th file-system step (``fsync``, ``replace``/``rename``, ``unlink``, ``mkdir``/``rmdir``,
``chmod``/``fchmod``, ``link``, ``open``), for N = 1, 2, ... until the operation completes. After
every kill the parent checks: the key store loads (fully old or fully new, unique key ids, at
most one primary, private files 0600 in a 0700 folder), the ledger opens, the store holds no
half version, and every artifact written before still verifies. Ledger writes happen inside
SQLite (no Python-level steps), so they are killed at random moments instead, and every row the
child saw acknowledged by the ledger's ``durable()`` barrier must survive.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dagster_wandb_secure.core.envelope import seal_to, unseal_from
from dagster_wandb_secure.core.keys import KeyStatus, KeyStore
from dagster_wandb_secure.core.manifest import MANIFEST_NAME, verify_manifest, write_manifest
from dagster_wandb_secure.stores.local import LocalArtifactStore
from kit.adversarial import mode_of

HOOKED = ("fsync", "replace", "rename", "unlink", "mkdir", "rmdir", "chmod", "fchmod", "link",
          "open")
ENTITY, PROJECT = "team", "proj"
MAX_STEPS = 400


def _child(step: int, op: Callable[[], Any]) -> None:
    calls = [0]

    def wrap(real: Callable[..., Any]) -> Callable[..., Any]:
        def hooked(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if calls[0] == step:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        return hooked

    for name in HOOKED:
        setattr(os, name, wrap(getattr(os, name)))
    op()


def run_killed_at(step: int, op: Callable[[], Any]) -> bool:
    """Run ``op`` in a forked child killed before its ``step``-th hooked call.

    Returns True if the child was killed, False if ``op`` completed first."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            _child(step, op)
        except BaseException:  # noqa: BLE001 - reported by the exit code
            import traceback

            traceback.print_exc()
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, f"the operation failed at step {step}"
    return False


def kill_at_each_step(op: Callable[[], Any], check: Callable[[int], None],
                      restore: Path | None = None) -> int:
    """Kill ``op`` before each of its steps in turn, calling ``check(step)`` after each kill.
    With ``restore``, that folder is put back as it was before every next run (so each run
    starts from the same state). Returns the number of steps."""
    snapshot = None
    if restore is not None:
        snapshot = restore.with_name(restore.name + ".snapshot")
        shutil.copytree(restore, snapshot, symlinks=True)
    for step in range(1, MAX_STEPS):
        killed = run_killed_at(step, op)
        check(step)
        if not killed:
            return step - 1
        if snapshot is not None and restore is not None:
            shutil.rmtree(restore)
            shutil.copytree(snapshot, restore, symlinks=True)
    raise AssertionError(f"the operation did not complete within {MAX_STEPS} steps")


# --- the shared invariants -------------------------------------------------------------------


def check_key_store(keys: Path, before: set[str], allowed_new: int = 1) -> KeyStore:
    ks = KeyStore.open(keys, create=False)  # always loads
    kids = [r.kid for r in ks.records()]
    assert len(kids) == len(set(kids)), "duplicate key id"
    assert before <= set(kids), "a key was lost"
    assert len(set(kids) - before) <= allowed_new, "a half-made extra key"
    assert sum(r.status is KeyStatus.PRIMARY for r in ks.records()) <= 1
    ks.ledger.count()  # the ledger opens
    assert mode_of(keys) == 0o700
    assert mode_of(keys / "private") == 0o700
    for f in (keys / "private").iterdir():
        if f.is_file():
            assert mode_of(f) == 0o600, f
    return ks


def verify_all(store_dir: Path, ks: KeyStore, expected: dict[str, Any]) -> int:
    """Every version in the store verifies and loads to what was written; returns the count."""
    store = LocalArtifactStore(store_dir)
    n = 0
    for av in store.list_versions():
        ctx = {"artifact": av.name, "type": "dataset", "partition": None}
        files = {rel: store.file_path(av, rel) for rel in av.files}
        assert MANIFEST_NAME in files, f"half version {av.qualified_name}"
        verify_manifest(files, key_store=ks, expected_context=ctx)
        value = unseal_from(files["output.pickle"], key_store=ks, expected_context=ctx)
        assert value == expected[f"{av.name}:v{av.version}"]
        n += 1
    return n


def publish(root: Path, ks: KeyStore, store_dir: Path, name: str, value: Any) -> None:
    """What the IO manager does for one output, on the library's public pieces."""
    staging = root / "staging" / f"{name}-{os.getpid()}-{time.monotonic_ns()}"
    staging.mkdir(parents=True)
    ctx = {"artifact": name, "type": "dataset", "partition": None}
    h = seal_to(staging / "output.pickle", value, key_store=ks, context=ctx, durable=True)
    files = {"output.pickle": staging / "output.pickle"}
    manifest, mh = write_manifest(files, key_store=ks, context=ctx)
    (staging / MANIFEST_NAME).write_bytes(manifest)
    files[MANIFEST_NAME] = staging / MANIFEST_NAME
    av = LocalArtifactStore(store_dir).publish(
        entity=ENTITY, project=PROJECT, name=name, type="dataset", files=files
    )
    for row in (h.ledger_row, mh.ledger_row):
        if row is not None:
            ks.ledger.attach_version(row, artifact_version=av.version_label, aliases=av.aliases)


@pytest.fixture
def setup(tmp_path: Path, alg: str) -> dict[str, Any]:
    keys = tmp_path / "keys"
    ks = KeyStore.open(keys)
    ks.generate(alg)
    store_dir = tmp_path / "store"
    expected: dict[str, Any] = {}
    for i in range(2):
        publish(tmp_path, ks, store_dir, "before", {"i": i})
        expected[f"before:v{i}"] = {"i": i}
    return {"root": tmp_path, "keys": keys, "ks": ks, "store": store_dir, "expected": expected,
            "alg": alg}


# --- key operations ---------------------------------------------------------------------------


def test_attack_15_sigkill_at_each_step_of_key_generate(setup: dict[str, Any]) -> None:
    keys = setup["keys"]
    before = {r.kid for r in setup["ks"].records()}

    def check(step: int) -> None:
        ks = check_key_store(keys, before)
        assert verify_all(setup["store"], ks, setup["expected"]) == 2

    steps = kill_at_each_step(lambda: KeyStore.open(keys).generate(setup["alg"]), check, keys)
    assert steps >= 3


def test_attack_15_sigkill_at_each_step_of_rotate(setup: dict[str, Any]) -> None:
    keys = setup["keys"]
    old_primary = setup["ks"].primary().kid
    before = {r.kid for r in setup["ks"].records()}

    def check(step: int) -> None:
        ks = check_key_store(keys, before)
        new = {r.kid for r in ks.records()} - before
        # fully old (the old primary still primary, nothing new) or fully new
        if new:
            assert ks.primary().kid in new
            assert ks.get(old_primary).status is KeyStatus.VERIFY_ONLY
        else:
            assert ks.primary().kid == old_primary
        assert verify_all(setup["store"], ks, setup["expected"]) == 2

    assert kill_at_each_step(lambda: KeyStore.open(keys).rotate(), check, keys) >= 3


@pytest.mark.parametrize("action", ["revoke", "destroy"])
def test_attack_15_sigkill_at_each_step_of_revoke_and_destroy(setup: dict[str, Any],
                                                             action: str) -> None:
    keys = setup["keys"]
    ks0: KeyStore = setup["ks"]
    victim = ks0.generate(setup["alg"])  # verify-only; signs nothing we keep
    before = {r.kid for r in ks0.records()}

    def op() -> None:
        ks = KeyStore.open(keys)
        if action == "revoke":
            ks.revoke(victim, "compromised")
        else:
            ks.destroy(victim)

    def check(step: int) -> None:
        ks = check_key_store(keys, before, allowed_new=0)
        status = ks.get(victim).status
        if action == "revoke":
            assert status in (KeyStatus.VERIFY_ONLY, KeyStatus.REVOKED)
        else:
            assert status in (KeyStatus.VERIFY_ONLY, KeyStatus.DESTROYED)
            if status is KeyStatus.DESTROYED:
                # the secret is gone or about to be cleaned up; it never signs again
                from dagster_wandb_secure.core.errors import SecureArtifactError

                with pytest.raises(SecureArtifactError):
                    ks.signer(victim)
        assert verify_all(setup["store"], ks, setup["expected"]) == 2

    assert kill_at_each_step(op, check, keys) >= 2


# --- artifact publish -----------------------------------------------------------------------


def test_sigkill_at_each_step_of_artifact_publish(setup: dict[str, Any]) -> None:
    root, keys, store_dir = setup["root"], setup["keys"], setup["store"]
    expected = dict(setup["expected"])

    def op() -> None:
        publish(root, KeyStore.open(keys), store_dir, "during", {"new": True})

    def check(step: int) -> None:
        ks = check_key_store(keys, {r.kid for r in setup["ks"].records()}, allowed_new=0)
        store = LocalArtifactStore(store_dir)
        during = [av for av in store.list_versions() if av.name == "during"]
        assert len(during) <= 1, "a duplicate version"
        exp = dict(expected)
        if during:
            exp[f"during:v{during[0].version}"] = {"new": True}
        assert verify_all(store_dir, ks, exp) == 2 + len(during)
        if during:  # completed: remove nothing; the next run publishes v1, also fine
            expected[f"during:v{during[0].version}"] = {"new": True}

    steps = kill_at_each_step(op, check)
    assert steps >= 5


def publish_by_move(ks: KeyStore, store_dir: Path, name: str, value: Any) -> None:
    """What the IO manager does for one output by move (merge e211ba8): the files written
    straight into a staging area, then renamed to ``v<N>`` under the store lock, flushed with
    the ledger barrier after the rename, and only then committed to the index."""
    store = LocalArtifactStore(store_dir)
    ctx = {"artifact": name, "type": "dataset", "partition": None}
    with store.staging_area() as area:
        h = seal_to(area.path / "output.pickle", value, key_store=ks, context=ctx)
        files = {"output.pickle": area.path / "output.pickle"}
        manifest, mh = write_manifest(files, key_store=ks, context=ctx)
        (area.path / MANIFEST_NAME).write_bytes(manifest)
        files[MANIFEST_NAME] = area.path / MANIFEST_NAME
        av = store.publish(
            entity=ENTITY, project=PROJECT, name=name, type="dataset", files=files,
            staged=area, barrier=ks.ledger.durable,
        )
    for row in (h.ledger_row, mh.ledger_row):
        if row is not None:
            ks.ledger.attach_version(row, artifact_version=av.version_label, aliases=av.aliases)


def test_sigkill_at_each_step_of_a_publish_by_move(setup: dict[str, Any]) -> None:
    """Killed anywhere, also between the rename into ``artifacts/`` and the index commit: no
    half version is ever listed, and once the store is opened again (its recovery runs) no
    folder the index does not name is left in the artifact's folder, so the next publish of
    that number is never confused by one."""
    keys, store_dir = setup["keys"], setup["store"]
    expected = dict(setup["expected"])
    folder = store_dir / "artifacts" / ENTITY / PROJECT / "moved"
    renamed_uncommitted = [0]

    def op() -> None:
        publish_by_move(KeyStore.open(keys), store_dir, "moved", {"moved": True})

    def check(step: int) -> None:
        if folder.is_dir():  # what the kill left, before any recovery
            left = {p.name for p in folder.iterdir()}
            known = {f"v{n}" for n in _indexed(store_dir)}
            renamed_uncommitted[0] += bool(left - known)
        ks = check_key_store(keys, {r.kid for r in setup["ks"].records()}, allowed_new=0)
        store = LocalArtifactStore(store_dir)  # recovery of a pending row runs here
        moved = [av for av in store.list_versions() if av.name == "moved"]
        exp = dict(expected)
        for av in moved:
            exp[f"moved:v{av.version}"] = {"moved": True}
        assert verify_all(store_dir, ks, exp) == 2 + len(moved)
        assert [av.version for av in moved] == list(range(len(moved))), "a gap or a duplicate"
        if folder.is_dir():
            assert sorted(p.name for p in folder.iterdir()) == [f"v{av.version}" for av in moved]
        expected.update({k: v for k, v in exp.items() if k.startswith("moved:")})

    steps = kill_at_each_step(op, check)
    assert steps >= 5
    assert renamed_uncommitted[0] >= 1, "no kill fell between the rename and the commit"


def _indexed(store_dir: Path) -> list[int]:
    import sqlite3

    conn = sqlite3.connect(store_dir / "index.sqlite3")
    try:
        return [n for (n,) in conn.execute(
            "SELECT v.number FROM versions v JOIN artifacts a ON a.id = v.artifact_id "
            "WHERE a.name = 'moved'")]
    finally:
        conn.close()


# --- ledger writes ----------------------------------------------------------------------------


def test_sigkill_during_ledger_writes_loses_no_committed_row(setup: dict[str, Any]) -> None:
    keys = setup["keys"]
    rng = random.Random(5)
    for _round in range(5):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(read_fd)
            try:
                ledger = KeyStore.open(keys).ledger
                i = 0
                while True:
                    i += 1
                    row = ledger.record_signature(
                        key_id="0123456789abcdef", alg="ed25519",
                        digest=f"{i:064x}", length=i,
                        context={"artifact": "ledgered", "type": "dataset"},
                        serializer="pickle", signed_at="2026-01-01T00:00:00.000000Z",
                    )
                    if i % 3 == 0:  # rows are grouped: the barrier acknowledges them
                        ledger.durable()
                        os.write(write_fd, f"{row}\n".encode())
            finally:
                os._exit(3)
        os.close(write_fd)
        time.sleep(rng.uniform(0.05, 0.3))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with os.fdopen(read_fd, "rb") as fh:
            committed = [int(x) for x in fh.read().split(b"\n")[:-1] if x]
        ks = check_key_store(keys, {r.kid for r in setup["ks"].records()}, allowed_new=0)
        ids = {r.id for r in ks.ledger.rows(artifact="ledgered")}
        assert set(committed) <= ids, "a committed ledger row was lost"
        assert verify_all(setup["store"], ks, setup["expected"]) == 2


def test_sigkill_after_the_durable_barrier_keeps_the_row_and_publish_waits_for_it(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    """A grouped row (not committed yet) survives SIGKILL once ``durable()`` returned; and the
    one publisher makes the barrier before the store sees the version, so a version is never
    visible without its signature row, wherever the publisher is killed."""
    from dagster_wandb_secure.artifacts import publishing

    keys = setup["keys"]
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        try:
            ledger = KeyStore.open(keys).ledger
            row = ledger.record_signature(
                key_id="0123456789abcdef", alg="ed25519", digest="ab" * 32, length=1,
                context={"artifact": "barrier"}, serializer="pickle",
                signed_at="2026-01-01T00:00:00.000000Z",
            )
            assert ledger._group_rows == 1  # grouped: not committed yet
            ledger.durable()
            os.write(write_fd, f"{row}\n".encode())
            os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(3)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    with os.fdopen(read_fd, "rb") as fh:
        row = int(fh.read().strip())
    assert [r.id for r in KeyStore.open(keys).ledger.rows(artifact="barrier")] == [row]

    # the ordering, with the real publisher, key store and local store: when the barrier
    # runs the version is not visible yet; when the barrier fails nothing is published
    ks = KeyStore.open(keys)
    store = LocalArtifactStore(tmp_path / "barrier-store")
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"x")
    seen: list[int] = []
    real = ks.ledger.durable

    def watching() -> None:
        seen.append(len(list(store.list_versions())))
        real()

    def publish() -> Any:
        return publishing.publish_version(
            store, ks, files={"payload.bin": payload}, rows=[], entity=ENTITY,
            project=PROJECT, name="barrier", type_="dataset", description=None, metadata={},
            aliases=[],
        )

    ks.ledger.durable = watching  # type: ignore[method-assign]
    publish()
    assert seen == [0] and len(list(store.list_versions())) == 1

    def failing() -> None:
        raise OSError("fsync failed")

    ks.ledger.durable = failing  # type: ignore[method-assign]
    with pytest.raises(OSError):
        publish()
    assert len(list(store.list_versions())) == 1, "a version became visible without the barrier"
