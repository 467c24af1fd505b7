"""The audit lists a local store's versions in batches (``LocalArtifactStore.list_files_of``:
each version folder opened below its artifact folder's descriptor, no path resolved per
version). These tests pin that shortcut: it resolves no path per version, and it refuses every
hostile layout the per-version listing (``files_on_disk``) refuses, with the same status; a
symlinked folder that stays inside the store, which the per-version listing reads through, is
refused too. The same holds on forked worker processes (``audit_store(processes=True)``): every
hostile layout gets the per-version status there too, and the children really ran it."""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dagster_wandb_secure.maintenance.audit as audit_module
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.manifest import MANIFEST_NAME
from dagster_wandb_secure.maintenance.audit import audit_store
from dagster_wandb_secure.stores.base import StoreError
from dagster_wandb_secure.stores.local import LocalArtifactStore
from kit import forked_audit
from kit.cli import ENTITY, PROJECT, Env, append_byte, flip_last_byte, make_writable
from kit.counting import count_calls

ART = Path("artifacts") / ENTITY / PROJECT


def _env(root: Path) -> Env:
    ks = KeyStore.open(root / "keys")
    ks.generate("ed25519")
    return Env(root, root / "keys", root / "store", ks, LocalArtifactStore(root / "store"))


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return _env(tmp_path)


class PerVersion:
    """The same store without ``list_files_of``: the audit lists each version on its own."""

    def __init__(self, store: LocalArtifactStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name == "list_files_of":
            raise AttributeError(name)
        return getattr(self._store, name)


def statuses(
    env: Env, store: Any = None, deep: bool = False, **kw: Any
) -> dict[tuple[str, str], str]:
    report = audit_store(store or env.store, env.ks, deep=deep, **kw)
    return {(e.name, e.version): str(e.status) for e in report.entries}


@pytest.fixture
def spy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[int]]:
    """Runs ``audit._run_forked`` through ``kit.forked_audit.logged`` (set before the fork, so
    the children inherit it); returns a function giving the pid of each task's process."""
    log = tmp_path / "forked-pids.log"
    log.write_text("")
    monkeypatch.setattr(forked_audit, "LOG", log)
    monkeypatch.setattr(forked_audit, "REAL", audit_module._run_forked)
    monkeypatch.setattr(audit_module, "_run_forked", forked_audit.logged)
    return lambda: [int(line) for line in log.read_text().split()]


def skip_unless_this_process_can_fork() -> None:
    if not audit_module._fork_is_safe():
        pytest.skip(f"threads other tests left running: {[t.name for t in threading.enumerate()]}")


def on_processes(env: Env, spy: Callable[[], list[int]], **kw: Any) -> dict[tuple[str, str], str]:
    """``statuses`` checked on forked processes in this test process; asserts the children,
    not this process, ran every task. Skipped when threads other tests left behind (a
    PostgreSQL ledger's pool) keep this process from forking (``forked_statuses`` does not
    depend on them)."""
    skip_unless_this_process_can_fork()
    before = len(spy())
    got = statuses(env, processes=True, workers=2, **kw)
    pids = spy()[before:]
    assert pids and os.getpid() not in pids
    return got


def forked_statuses(env: Env, *args: str) -> dict[tuple[str, str], str]:
    """The statuses of ``audit_store(processes=True)`` run in a fresh interpreter
    (``kit.forked_audit``: its forked children, not it, checked every task); ``args``:
    ``--deep``, ``--batch N``."""
    log = env.root / f"forked-{os.urandom(4).hex()}.log"
    log.write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "kit.forked_audit", str(env.keys), str(env.store_dir), str(log),
         *args],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout)
    pids = [int(x) for x in log.read_text().split()]
    assert pids and doc["pid"] not in pids
    return {(name, version): status for name, version, status in doc["statuses"]}


def folder(env: Env, name: str, version: int) -> Path:
    return env.store_dir / ART / name / f"v{version}"


def writable_tree(path: Path) -> None:
    for dirpath, _dirs, _files in os.walk(path):
        make_writable(Path(dirpath))


# --- hostile layouts, each applied to version v0 of artifact "a" (the store also holds a:v1, b:v0)


def _payload_symlink(env: Env, tmp: Path) -> None:
    target = folder(env, "a", 0) / "output.pickle"
    copy = tmp / "elsewhere.pickle"
    shutil.copyfile(target, copy)
    make_writable(target.parent)
    target.unlink()
    target.symlink_to(copy)


def _payload_fifo(env: Env, tmp: Path) -> None:
    target = folder(env, "a", 0) / "output.pickle"
    make_writable(target.parent)
    target.unlink()
    os.mkfifo(target)


def _version_folder_symlink(env: Env, tmp: Path) -> None:
    v0 = folder(env, "a", 0)
    writable_tree(v0)
    shutil.rmtree(v0)
    v0.symlink_to(folder(env, "b", 0), target_is_directory=True)


def _version_folder_gone(env: Env, tmp: Path) -> None:
    writable_tree(folder(env, "a", 0))
    shutil.rmtree(folder(env, "a", 0))


def _extra_file(env: Env, tmp: Path) -> None:
    make_writable(folder(env, "a", 0))
    (folder(env, "a", 0) / "planted.txt").write_bytes(b"x")


def _planted_subfolder(env: Env, tmp: Path) -> None:
    make_writable(folder(env, "a", 0))
    (folder(env, "a", 0) / "sub").mkdir()
    (folder(env, "a", 0) / "sub" / "f").write_bytes(b"x")


def _subfolder_symlink(env: Env, tmp: Path) -> None:
    outside = tmp / "outside-sub"
    outside.mkdir()
    (outside / "f").write_bytes(b"x")
    make_writable(folder(env, "a", 0))
    (folder(env, "a", 0) / "sub").symlink_to(outside, target_is_directory=True)


def _payload_missing(env: Env, tmp: Path) -> None:
    make_writable(folder(env, "a", 0))
    (folder(env, "a", 0) / "output.pickle").unlink()


def _payload_grown(env: Env, tmp: Path) -> None:
    append_byte(folder(env, "a", 0) / "output.pickle")


def _payload_flipped(env: Env, tmp: Path) -> None:  # same size: fast audits do not hash
    flip_last_byte(folder(env, "a", 0) / "output.pickle")


def _manifest_flipped(env: Env, tmp: Path) -> None:
    flip_last_byte(folder(env, "a", 0) / MANIFEST_NAME)


def _manifests_swapped(env: Env, tmp: Path) -> None:
    m0, m1 = folder(env, "a", 0) / MANIFEST_NAME, folder(env, "a", 1) / MANIFEST_NAME
    for m in (m0, m1):
        make_writable(m.parent)
    tmp_name = m0.with_name("swap")
    os.rename(m0, tmp_name)
    os.rename(m1, m0)
    os.rename(tmp_name, m1)


def _version_folders_swapped(env: Env, tmp: Path) -> None:  # renamed folders
    v0, v1 = folder(env, "a", 0), folder(env, "a", 1)
    make_writable(v0.parent)
    os.rename(v0, v0.with_name("swap"))
    os.rename(v1, v0)
    os.rename(v0.with_name("swap"), v1)


def _artifact_folder_outside(env: Env, tmp: Path) -> None:
    art = env.store_dir / ART / "a"
    os.rename(art, tmp / "outside-a")  # moved out of the store, a symlink left in its place
    art.symlink_to(tmp / "outside-a", target_is_directory=True)


def _entity_folder_outside(env: Env, tmp: Path) -> None:
    entity = env.store_dir / "artifacts" / ENTITY
    os.rename(entity, tmp / "outside-entity")
    entity.symlink_to(tmp / "outside-entity", target_is_directory=True)


HOSTILE: dict[str, Callable[[Env, Path], None]] = {
    f.__name__.lstrip("_"): f
    for f in (
        _payload_symlink, _payload_fifo, _version_folder_symlink, _version_folder_gone,
        _extra_file, _planted_subfolder, _subfolder_symlink, _payload_missing, _payload_grown,
        _payload_flipped, _manifest_flipped, _manifests_swapped, _version_folders_swapped,
        _artifact_folder_outside, _entity_folder_outside,
    )
}


def _store(env: Env) -> None:
    env.publish("a")
    env.publish("a")
    env.publish("b")


@pytest.mark.parametrize("hostile", sorted(HOSTILE))
def test_batch_listing_gives_every_version_the_per_version_status(
    env: Env, tmp_path: Path, hostile: str
) -> None:
    _store(env)
    (tmp_path / "attacker").mkdir()
    HOSTILE[hostile](env, tmp_path / "attacker")
    batch, per_version = statuses(env), statuses(env, PerVersion(env.store))
    assert batch == per_version
    assert batch[("b", "v0")] == ("tampered" if hostile == "entity_folder_outside" else "signature-ok")


def test_a_symlinked_artifact_folder_inside_the_store_is_refused(env: Env, tmp_path: Path) -> None:
    """``a`` renamed to ``a-moved`` and a symlink ``a -> a-moved`` left in its place: the
    per-version listing reads through it (it stays inside the store), the batch listing opens
    no symlink below ``artifacts/`` (as the writer's head scan)."""
    _store(env)
    art = env.store_dir / ART / "a"
    os.rename(art, art.with_name("a-moved"))
    art.symlink_to(art.with_name("a-moved"), target_is_directory=True)
    got = audit_store(env.store, env.ks, deep=False)
    by = {(e.name, e.version): e for e in got.entries}
    for v in ("v0", "v1"):
        assert str(by[("a", v)].status) == "tampered"
        assert "symlink" in (by[("a", v)].reason or "")
    assert str(by[("b", "v0")].status) == "signature-ok"
    assert statuses(env, PerVersion(env.store))[("a", "v1")] == "signature-ok"


@pytest.mark.parametrize("forked", [False, True], ids=["threads", "processes"])
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(sorted(HOSTILE)), min_size=1, max_size=3, unique=True))
def test_any_mix_of_hostile_layouts_gets_the_per_version_statuses(
    tmp_path_factory: pytest.TempPathFactory, forked: bool, chosen: list[str]
) -> None:
    """On threads (batches of an artifact's versions) and on forked processes (one version
    per batch, so both workers get tasks)."""
    root = tmp_path_factory.mktemp("mix")
    env = _env(root)
    _store(env)
    attacker = root / "attacker"
    attacker.mkdir()
    # the FIFO last: the other layouts' helpers read the payload, which would block on it
    for name in sorted(chosen, key=lambda n: n == "payload_fifo"):
        try:
            HOSTILE[name](env, attacker)
        except (FileNotFoundError, FileExistsError, NotADirectoryError, OSError):
            pass  # an earlier layout already removed what this one changes
    got = forked_statuses(env, "--batch", "1") if forked else statuses(env)
    assert got == statuses(env, PerVersion(env.store))


# --- the shortcut's algorithmic properties ----------------------------------------------------


def test_no_path_is_resolved_per_version(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh store object resolves its artifacts folder once; the audit resolves nothing per
    version (before: three ``check_inside`` and two ``resolve_inside`` per version)."""
    counts = []
    env.publish("n0")
    audit_store(LocalArtifactStore(env.store_dir), env.ks, deep=False)  # once-per-process work
    for total in (2, 8):
        while sum(1 for _ in env.store.list_versions()) < total:
            env.publish(f"n{sum(1 for _ in env.store.list_versions()) % 3}")
        store = LocalArtifactStore(env.store_dir)
        with monkeypatch.context() as m:
            calls = count_calls(m, os.path, "realpath")
            report = audit_store(store, env.ks, deep=False)
        assert len(report.entries) == total
        counts.append(len(calls))
    assert counts[0] == counts[1] <= 2, counts


def test_each_version_folder_is_listed_once(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        env.publish(f"n{i % 2}")
    calls = count_calls(monkeypatch, os, "scandir")
    report = audit_store(env.store, env.ks, deep=False)
    assert {str(e.status) for e in report.entries} == {"signature-ok"}
    assert len(calls) == 5


def test_batches_split_long_artifacts_and_keep_the_order(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "a", "a", "b", "a", "c", "c"):
        env.publish(name)
    monkeypatch.setattr(audit_module, "BATCH", 2)
    seen: list[list[str]] = []
    real = env.store.list_files_of

    def spy(versions: Any) -> Any:
        versions = list(versions)
        seen.append([av.qualified_name for av in versions])
        return real(versions)

    monkeypatch.setattr(env.store, "list_files_of", spy)
    report = audit_store(env.store, env.ks, deep=False, workers=2)
    order = [(e.name, e.version) for e in report.entries]
    assert order == sorted(order, key=lambda k: (k[0], int(k[1][1:])))
    assert all(len(batch) <= 2 and len({q.split(":")[0] for q in batch}) == 1 for batch in seen)
    assert sum(len(b) for b in seen) == 7
    assert {str(e.status) for e in report.entries} == {"signature-ok"}


def _open_fds() -> int:
    gc.collect()  # earlier tests' unreachable objects close their descriptors now, not mid-test
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_the_batch_listing_leaves_no_descriptor_open(env: Env, tmp_path: Path) -> None:
    _store(env)
    (tmp_path / "attacker").mkdir()
    _subfolder_symlink(env, tmp_path / "attacker")
    audit_store(env.store, env.ks, deep=False)  # connections and caches opened once
    before = _open_fds()
    for _ in range(3):
        audit_store(env.store, env.ks, deep=False)
    listing = env.store.list_files_of(list(env.store.list_versions()))
    next(listing)
    listing.close()  # a consumer that stops early
    assert _open_fds() == before


def test_a_missing_artifacts_folder_is_an_error_for_every_version(env: Env) -> None:
    _store(env)
    art = env.store_dir / "artifacts"
    os.rename(art, env.root / "gone")
    art.symlink_to(env.root / "gone", target_is_directory=True)
    env.store._artifacts_real = art  # as if it had been resolved before the swap
    got = statuses(env)
    assert set(got.values()) <= {"tampered", "error"} and len(got) == 3


# --- the same checks on forked worker processes ---------------------------------------------


@pytest.mark.parametrize("hostile", sorted(HOSTILE))
def test_forked_workers_give_every_version_the_per_version_status(
    env: Env, tmp_path: Path, hostile: str
) -> None:
    _store(env)
    (tmp_path / "attacker").mkdir()
    HOSTILE[hostile](env, tmp_path / "attacker")
    assert forked_statuses(env) == statuses(env, PerVersion(env.store))


@pytest.mark.parametrize("hostile", ["payload_flipped", "manifest_flipped", "payload_grown"])
def test_a_deep_audit_on_forked_workers_gives_the_per_version_status(
    env: Env, tmp_path: Path, hostile: str
) -> None:
    """Deep audits fork the same way (every payload re-hashed in the children)."""
    _store(env)
    (tmp_path / "attacker").mkdir()
    HOSTILE[hostile](env, tmp_path / "attacker")
    got = forked_statuses(env, "--deep")
    assert got == statuses(env, PerVersion(env.store), deep=True)
    assert got[("a", "v0")] == "tampered" and got[("b", "v0")] == "valid"


def test_a_large_store_is_checked_on_one_process_per_worker_in_order(
    env: Env, monkeypatch: pytest.MonkeyPatch, spy: Callable[[], list[int]]
) -> None:
    """Above ``PROCESS_MIN_VERSIONS`` (None: automatic) the versions are checked by ``workers``
    forked children, the report in the store's order with the thread path's entries."""
    for name in ("a", "a", "a", "b", "a", "c", "c", "d", "d", "d"):
        env.publish(name)
    monkeypatch.setattr(audit_module, "PROCESS_MIN_VERSIONS", 10)
    monkeypatch.setattr(audit_module, "BATCH", 1)
    skip_unless_this_process_can_fork()
    forked = audit_store(env.store, env.ks, deep=False, workers=2)
    pids = spy()
    assert len(pids) >= 2 and len(set(pids)) <= 2 and os.getpid() not in pids
    threaded = audit_store(env.store, env.ks, deep=False, workers=2, processes=False)
    assert len(spy()) == len(pids)  # processes=False: no task on a process
    assert [e.as_dict() | {"generated_at": None} for e in forked.entries] == [
        e.as_dict() | {"generated_at": None} for e in threaded.entries
    ]
    order = [(e.name, e.version) for e in forked.entries]
    assert order == sorted(order, key=lambda k: (k[0], int(k[1][1:])))
    assert {str(e.status) for e in forked.entries} == {"signature-ok"}


def test_a_small_store_or_another_thread_keeps_the_audit_on_threads(
    env: Env, monkeypatch: pytest.MonkeyPatch, spy: Callable[[], list[int]]
) -> None:
    """Below ``PROCESS_MIN_VERSIONS``, and whenever another thread runs (a lock it holds at a
    fork would stay held in the child), nothing forks, whatever ``processes`` says."""
    _store(env)
    assert statuses(env, workers=2) == statuses(env, processes=False)
    assert spy() == []
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        got = statuses(env, processes=True, workers=2)
    finally:
        stop.set()
        other.join()
    assert spy() == []
    assert got == statuses(env, PerVersion(env.store))


def test_a_daemonic_worker_process_audits_on_threads(
    env: Env, monkeypatch: pytest.MonkeyPatch, spy: Callable[[], list[int]]
) -> None:
    """A daemonic ``multiprocessing`` worker (an executor's step process, say) may not start
    processes: the audit stays on threads there instead of failing."""
    _store(env)

    class Daemon:
        daemon = True

    monkeypatch.setattr(audit_module.multiprocessing, "current_process", lambda: Daemon())
    assert set(statuses(env, processes=True, workers=2).values()) == {"signature-ok"}
    assert spy() == []


def test_forked_workers_leave_the_index_and_ledger_usable(
    env: Env, spy: Callable[[], list[int]]
) -> None:
    """The children inherit the store index's and the ledger's SQLite connections and must
    neither use nor close them (``core/sqlite_fork.py``): after audits on processes both
    databases still hold every row and take new ones."""
    _store(env)
    rows = len(list(env.ks.ledger.rows()))
    for _ in range(3):
        assert set(on_processes(env, spy).values()) == {"signature-ok"}
    env.publish("e")
    assert len(list(env.ks.ledger.rows())) > rows
    assert len(list(env.store.list_versions())) == 4
    assert set(on_processes(env, spy).values()) == {"signature-ok"}


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_forked_workers_leave_no_descriptor_open(env: Env, spy: Callable[[], list[int]]) -> None:
    _store(env)
    on_processes(env, spy)
    before = _open_fds()
    for _ in range(3):
        on_processes(env, spy)
    assert _open_fds() == before


def test_the_threads_publishing_leaves_behind_do_not_keep_the_audit_on_threads(env: Env) -> None:
    """Publishing leaves ``stores.local_fsync``'s idle worker threads and the ledger's group
    flusher behind (fork-aware: see ``audit._fork_is_safe``); the audit still forks. Pins the
    thread names the audit recognises. In a fresh interpreter (``kit.forked_audit
    --publish-first``): this test process may hold threads other tests left (W&B's, a
    PostgreSQL pool's), which rightly keep it on threads."""
    _store(env)
    got = forked_statuses(env, "--publish-first")
    assert got[("published-here", "v0")] == "signature-ok"
    assert set(got.values()) == {"signature-ok"}


def dying_spy(task: Any) -> Any:
    """A worker process that dies mid-audit (killed, out of memory)."""
    os._exit(3)


def test_a_worker_process_that_dies_fails_the_audit_with_a_typed_error(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    _store(env)
    skip_unless_this_process_can_fork()
    monkeypatch.setattr(audit_module, "_run_forked", dying_spy)
    with pytest.raises(StoreError, match="audit worker process ended"):
        audit_store(env.store, env.ks, deep=False, processes=True, workers=2)
    assert set(statuses(env, processes=False).values()) == {"signature-ok"}
