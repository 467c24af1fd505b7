"""``audit_store(processes=True)`` in a fresh interpreter, for tests that compare the forked
audit with the per-version reference: a test process may hold threads that other tests left
behind (a PostgreSQL ledger's connection pool), and with those alive the audit rightly stays on
threads (``maintenance.audit._fork_is_safe``). Each task's process id is logged, so the caller
can check that forked children, not this interpreter, checked the versions.

``python -m kit.forked_audit KEYS STORE LOG [--deep] [--batch N] [--publish-first]`` prints
``{"pid": ..., "statuses": [[name, version, status], ...]}``."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

LOG: Path | None = None
REAL: Any = None


def logged(task: Any) -> Any:
    """``audit._run_forked``, also logging which process ran it (module level: the pool sends
    it to the children by name)."""
    assert LOG is not None
    with open(LOG, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return REAL(task)


def main(argv: list[str]) -> None:
    import dagster_wandb_secure.maintenance.audit as audit
    from dagster_wandb_secure.core.keys import KeyStore
    from dagster_wandb_secure.stores.local import LocalArtifactStore
    from kit import forked_audit as me  # this module by its import name (not __main__)

    keys, store, log = (Path(a) for a in argv[:3])
    me.LOG, me.REAL = log, audit._run_forked
    audit._run_forked = me.logged
    if "--batch" in argv:
        audit.BATCH = int(argv[argv.index("--batch") + 1])
    if "--publish-first" in argv:  # the threads a publish leaves behind, then the audit
        from kit.cli import Env

        Env(root=store.parent, keys=keys, store_dir=store, ks=KeyStore.open(keys),
            store=LocalArtifactStore(store)).publish("published-here")
        from dagster_wandb_secure.stores.local_fsync import fsync_together

        fds = [os.open(store.parent / f"fsynced-{i}", os.O_CREAT | os.O_WRONLY, 0o600)
               for i in range(3)]
        try:
            fsync_together(fds)  # the publish by move's flush pool
        finally:
            for fd in fds:
                os.close(fd)
        names = {t.name for t in threading.enumerate() if t is not threading.current_thread()}
        assert any(n.startswith("dws-fsync_") for n in names), names
        assert "ledger-group-commit" in names, names
        assert all(n.startswith(audit.FORK_AWARE_THREADS) for n in names), names
    assert audit._fork_is_safe(), [t.name for t in threading.enumerate()]
    report = audit.audit_store(
        LocalArtifactStore(store), KeyStore.open(keys), deep="--deep" in argv, processes=True,
        workers=2,
    )
    rows = [[e.name, e.version, str(e.status)] for e in report.entries]
    print(json.dumps({"pid": os.getpid(), "statuses": rows}))


if __name__ == "__main__":
    main(sys.argv[1:])
