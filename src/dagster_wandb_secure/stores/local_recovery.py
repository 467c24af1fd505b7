"""Crash recovery of the local store: publishes that died after renaming their folder into
``artifacts/`` and before committing its index rows.

A ``pending`` row (the intent, written before the rename) names the version; the next process
to take the store's publish lock finds the row, removes the folder if the index has no such
version, and deletes the row. An orphan folder (a folder no row names) met by a later publish of
the same number is removed too, unless it is really another artifact's folder on a
case-insensitive file system, or a live publisher still holds it (the ``hold_staging`` flock
follows the folder into ``artifacts/``: a store lock bypassed by deleting its file does not
make a live publish look dead). Index rows are hostile input: every folder is built by the store's
``version_dir`` (validated components, resolved inside ``artifacts/``) and every removal is
checked to stay inside ``artifacts/``; removal is a rename into ``staging/`` first.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from ..core.errors import UnsafePathError
from ..core.fsutil import fsync_dir
from .base import StoreError, check_inside
from .local_index import LocalIndex, artifact_label
from .local_rows import check_pending_row
from .local_staging import staging_is_held

__all__ = ["Recovery"]


class Recovery:
    """Recovery work on one store's index and folders (built per use by the store)."""

    def __init__(
        self,
        index: LocalIndex,
        artifacts: Path,
        staging: Path,
        version_dir: Callable[[str, str, str, int], Path],
    ) -> None:
        self._index = index
        self._artifacts = artifacts
        self._staging = staging
        self._version_dir = version_dir

    def pending(self, conn: sqlite3.Connection) -> None:
        """Undo publishes that died between their rename and their commit. Call under the
        store's publish lock: then every pending row belongs to a publisher that is gone."""
        rows = conn.execute("SELECT id, entity, project, name, number FROM pending").fetchall()
        for row in rows:
            # hostile input: a planted row must not move or delete anything outside the store
            pending_id, entity, project, name, number = check_pending_row(row)
            try:
                target = self._version_dir(entity, project, name, number)
            except UnsafePathError as exc:
                raise StoreError(
                    f"the pending row id={pending_id} of the store index: {exc.reason}",
                    artifact=artifact_label(entity, project, name),
                    version=f"v{number}",
                    hint=exc.hint,
                ) from None
            art = self._index.artifact_row(conn, entity, project, name)
            indexed = (
                art is not None
                and conn.execute(
                    "SELECT 1 FROM versions WHERE artifact_id = ? AND number = ?", (art[0], number)
                ).fetchone()
            )
            if not indexed and staging_is_held(target):
                continue  # its publisher is alive (the store lock was bypassed): not ours to undo
            if not indexed and os.path.lexists(target):
                with contextlib.suppress(StoreError):  # a case collision: leave the folder be
                    self.discard_orphan(conn, entity, project, name, number, target)
            with self._index.transaction(conn):
                conn.execute("DELETE FROM pending WHERE id = ?", (pending_id,))

    def discard_orphan(
        self,
        conn: sqlite3.Connection,
        entity: str,
        project: str,
        name: str,
        number: int,
        target: Path,
    ) -> None:
        """``target`` exists but the index has no such version: a publish crashed after its
        rename. Refuse if the folder is really another artifact's (a case-insensitive file
        system folding two names together) or a live publisher still holds it (its
        ``hold_staging`` flock: the store lock was bypassed, its file deleted or replaced while
        held); otherwise remove it."""
        if staging_is_held(target):
            raise StoreError(
                f"the folder {target} is being published by another live process although this "
                "one holds the store lock (its lock file was deleted or replaced while held)",
                artifact=artifact_label(entity, project, name),
                version=f"v{number}",
                hint="do not remove publish.lock while the store is in use; retry the publish",
            )
        for other in conn.execute(
            "SELECT a.entity, a.project, a.name FROM versions v JOIN artifacts a "
            "ON a.id = v.artifact_id WHERE lower(a.entity) = lower(?) AND lower(a.project) = "
            "lower(?) AND lower(a.name) = lower(?) AND v.number = ?",
            (entity, project, name, number),
        ).fetchall():
            try:  # index data: an invalid row names no folder and cannot collide with this one
                other_dir = self._version_dir(other[0], other[1], other[2], number)
            except (StoreError, UnsafePathError):
                continue
            with contextlib.suppress(OSError):
                if os.path.samefile(other_dir, target):
                    raise StoreError(
                        f"the folder {target} already holds {artifact_label(*other)}:v{number}; "
                        "names that differ only in case collide on this file system",
                        artifact=artifact_label(entity, project, name),
                        hint="use an artifact name that differs by more than letter case",
                    )
        self.discard_folder(target)

    def discard_folder(self, folder: Path) -> None:
        check_inside(self._artifacts, folder.parent, f"the folder {folder}")
        trash = self._staging / f"discard-{time.time_ns()}-{secrets.token_hex(6)}"
        try:
            os.rename(folder, trash)
            fsync_dir(folder.parent)
        except OSError as exc:
            raise StoreError(f"cannot remove the unindexed folder {folder}: {exc}") from exc
        if os.path.isdir(trash) and not os.path.islink(trash):
            shutil.rmtree(trash, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(trash)
