"""fsync the files and folders of one staged version at the same time (issue 16).

A publish by move must have every staged file's bytes, every folder's entries (the version's
and the one it was renamed into) and (the caller's ``barrier``) the ledger's signature rows on
disk before the index commit makes the version visible. Those flushes are independent of each
other: no one of them needs another to have completed first, only all of them before the
commit. Issued one after the other, each waits for its own journal commit and device flush
(three to five per version, ~0.4-2 ms each on the benchmark VM); issued together, from a few
worker threads, the file system can commit them in one journal transaction and one flush.
Durability is unchanged: ``fsync_together`` returns only when every one of them returned, and
raises if any failed (the publish then fails before its index commit and takes the renamed
folder back out, as it did when a single fsync failed).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["fsync_together"]

WORKERS = 4  # payload, manifest, version folder, the folder renamed into (the ledger: the caller)

_pool: ThreadPoolExecutor | None = None
_pool_pid: int | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """This process's pool (a pool inherited across ``fork`` has no threads: a new one)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="dws-fsync")
            _pool_pid = os.getpid()
        return _pool


def _fsync(fd: int) -> Callable[[], None]:
    return lambda: os.fsync(fd)  # os.fsync looked up when it runs (the crash tests hook it)


def fsync_together(fds: Sequence[int], also: Sequence[Callable[[], None]] = ()) -> None:
    """fsync every descriptor in ``fds`` and run every callable in ``also`` concurrently;
    return once all completed, raising the first error. The calling thread runs the first of
    ``also`` itself (the ledger's ``durable()`` then runs where it would have run alone: it
    takes the ledger's re-entrant lock and refuses to run inside the caller's batch), the
    worker threads the rest."""
    jobs = list(also) + [_fsync(fd) for fd in fds]
    if not jobs:
        return
    futures: list[Future[None]] = []
    if len(jobs) > 1:
        pool = _executor()
        futures = [pool.submit(job) for job in jobs[1:]]
    error: BaseException | None = None
    try:
        jobs[0]()
    except BaseException as exc:  # noqa: BLE001 - re-raised after the others finished
        error = exc
    for future in futures:  # wait for all: no descriptor may be closed under a running fsync
        try:
            future.result()
        except BaseException as exc:  # noqa: BLE001
            error = error or exc
    if error is not None:
        raise error
