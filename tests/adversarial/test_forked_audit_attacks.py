"""Red-team tests for the audit's forked workers (``maintenance.audit._in_processes``): a
deadlock in the children after a large hash in the parent, the audit inside a Dagster step, and
a child's entries checked against the versions it was given (the last part at the end).

``_fork_is_safe`` looks only at the threads ``threading`` knows. Native threads are invisible
to it, and one kind is this library's own: BLAKE3's multi-threaded update
(``core/digests.py``, from ``THREADED_UPDATE`` bytes, ``max_threads=AUTO``) runs on rayon's
*global* pool. That pool is started once per process and never restarted, and after a fork its
worker threads do not exist in the child. A child that hashes a large payload with ``AUTO``
queues its work on a pool with no threads and waits forever. So one large read or seal in the
parent (a Dagster IO manager loading a multi-MiB asset, an earlier deep audit on threads)
followed by a deep audit on processes hung that audit for good: no error, no timeout.

The deadlock guard here is a subprocess timeout (or ``signal.alarm`` in a forked child). It is
not a speed assertion: a deadlocked child never finishes, and a working one finishes in
seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dagster_wandb_secure.core import digests
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.stores.local import LocalArtifactStore
from kit.cli import Env

LARGE = 2 * digests.THREADED_UPDATE

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or not hasattr(os, "fork"), reason="the forked audit is Linux only"
)


def _fork_and_hash(data: bytes, want: str) -> int:
    """A forked child hashes ``data`` with the library's hasher; returns its exit status
    (0: right digest, 1: wrong digest, SIGALRM: it never finished)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 2
        try:
            # a deadlocked child is killed, not left behind (pytest-timeout's SIGALRM handler
            # is Python code, which never runs while the child waits inside the hasher)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(20)
            code = 0 if digests.digest_bytes("blake3", data) == want else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def test_a_forked_child_hashes_a_large_payload_after_the_parent_did() -> None:
    """The parent's large BLAKE3 update starts rayon's global pool; the child's own large
    update must still finish, with the same digest."""
    data = os.urandom(LARGE)
    want = digests.digest_bytes("blake3", data)  # the parent's pool now exists
    status = _fork_and_hash(data, want)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (
        f"the forked child did not finish hashing ({status=}: SIGALRM is a deadlock)"
    )


def test_the_parent_still_hashes_on_every_core_after_a_fork() -> None:
    """Only a forked child gives up the inherited pool: the parent keeps the threaded update."""
    data = os.urandom(LARGE)
    want = digests.digest_bytes("blake3", data)
    assert _fork_and_hash(data, want) == 0
    assert digests._threads_usable()  # the parent's own pool, as before the fork
    assert digests.digest_bytes("blake3", data) == want


_AUDIT = """
import os, sys
from dagster_wandb_secure.core import digests
from kit import forked_audit
# what a Dagster process does before an audit: one large read or seal (rayon's pool starts)
digests.digest_bytes("blake3", os.urandom(2 * digests.THREADED_UPDATE))
forked_audit.main(sys.argv[1:])
"""


def _large_store(root: Path, size: int = LARGE) -> Env:
    """A local store of three versions (by default with payloads BLAKE3 hashes on threads)."""
    ks = KeyStore.open(root / "keys")
    ks.generate("ed25519")
    env = Env(root, root / "keys", root / "store", ks, LocalArtifactStore(root / "store"))
    for name in ("a", "a", "b"):
        env.publish(name, os.urandom(size))
    return env


def test_a_deep_audit_on_processes_after_a_large_hash_in_the_parent_finishes(
    tmp_path: Path,
) -> None:
    """End to end, in a fresh interpreter (``kit.forked_audit``: its children, not it, checked
    the versions): large payloads, a large hash in the parent first, then a deep audit on forked
    workers. Before the fix the children deadlocked and the audit never returned."""
    env = _large_store(tmp_path)
    log = tmp_path / "pids.log"
    log.write_text("")
    proc = subprocess.Popen(
        [sys.executable, "-c", _AUDIT, str(env.keys), str(env.store_dir), str(log), "--deep"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
    )
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the audit and its deadlocked children
        proc.communicate()
        pytest.fail("the deep audit on forked workers never finished (a child deadlocked)")
    assert proc.returncode == 0, err[-3000:]
    doc = json.loads(out)
    pids = [int(x) for x in log.read_text().split()]
    assert pids and doc["pid"] not in pids
    assert {status for _name, _version, status in doc["statuses"]} == {"valid"}


# --- inside a Dagster run with the multiprocess executor ------------------------------------

def test_an_audit_in_a_multiprocess_dagster_step_gives_the_thread_statuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step process of Dagster's multiprocess executor (spawned, not daemonic) gives the
    statuses the thread path gives in this process, whichever path ``_fork_is_safe`` picks there
    (threads, at the time of writing: Dagster's own threads run in the step); nothing hangs and
    nothing fails."""
    from dagster import execute_job, instance_for_test, reconstructable
    from dagster_wandb_secure.maintenance.audit import audit_store
    from kit.audit_in_step import audit_job

    # the step process is spawned: it imports ``kit.audit_in_step`` by name
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))

    env = _large_store(tmp_path)
    want = [[e.name, e.version, str(e.status)]
            for e in audit_store(env.store, env.ks, deep=True, processes=False).entries]
    config = {"ops": {"audit_op": {"config": {"keys": str(env.keys), "store": str(env.store_dir)}}}}
    (tmp_path / "dagster").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        with execute_job(
            reconstructable(audit_job), instance=instance, run_config=config
        ) as result:
            assert result.success
            doc = result.output_for_node("audit_op")
    assert doc["pid"] != os.getpid()
    assert doc["statuses"] == want and {s for *_k, s in want} == {"valid"}


# --- a child's entries are data over a pipe: checked against the versions it was given --------


_SPY = """
import sys
from pathlib import Path
import dagster_wandb_secure.maintenance.audit as audit
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.stores.base import StoreError
from dagster_wandb_secure.stores.local import LocalArtifactStore

REAL = audit._run_forked


def dropping(task):  # a child that reports one version fewer than it was given
    return REAL(task)[:-1]


def swapping(task):  # a child that reports its versions' entries out of order
    return REAL(task)[::-1]


def foreign(task):  # a child whose first entry names another version than the one at its place
    out = REAL(task)
    out[0].version = "v999"
    return out


keys, store, spy = sys.argv[1:4]
assert audit._fork_is_safe()
audit._run_forked = globals()[spy]  # forked children inherit it (pickled by name: __main__)
try:
    audit.audit_store(LocalArtifactStore(Path(store)), KeyStore.open(Path(keys)), deep=False,
                      processes=True, workers=2)
except StoreError as exc:
    print("StoreError:", exc.reason)
else:
    print("no error")
"""


@pytest.mark.parametrize("spy", ["dropping", "swapping", "foreign"])
def test_a_child_reporting_other_entries_than_its_versions_fails_the_audit(
    tmp_path: Path, spy: str
) -> None:
    """Entries are matched to versions by position (``_check_history`` reads ``entries[i]``
    with ``versions[i]``'s aliases): a child's list that is shorter, reordered or names other
    versions must fail the audit with a typed error, not give a report with a version missing
    or another version's verdict (before the fix: an IndexError, or the wrong verdicts). In a
    fresh interpreter, so that threads other tests leave behind cannot keep it from forking."""
    env = _large_store(tmp_path, 64)
    done = subprocess.run(
        [sys.executable, "-c", _SPY, str(env.keys), str(env.store_dir), spy],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("StoreError: an audit worker process returned entries"), (
        done.stdout + done.stderr[-2000:]
    )
