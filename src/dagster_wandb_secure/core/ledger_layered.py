"""A read-only reader's ledger: a shared ledger it may only read, layered over its own local one.

``ledger_mode: read-only`` (``ledger_api.open_ledger``) for a reader whose PostgreSQL role may
only ``SELECT``. Every question is asked of both ledgers and the stronger answer wins: the
highest alias mark, the highest seen manifest, the shared ledger's sighting of a manifest
(normally the writer's own, the first) else the local one, the union of the signature rows.
What a reader writes (its marks, the manifests it verified, the schema-1 alias marks) goes to
the local ledger only (the key store's ``ledger.sqlite3``), so the reader keeps refusing a
rollback below its own advances on its next read, and nothing reaches the shared database.
What only a writer does (record a signature, attach a version, allocate a sequence, hold an
artifact's history lock) is refused with ``LedgerReadOnlyError`` before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from .history import Position, SeenManifest
from .ledger import LATEST, LedgerRow
from .ledger_api import (
    LedgerBackend,
    LedgerReadOnlyError,
    export_history,
    export_marks,
    ledger_status,
    ping,
)

__all__ = ["LayeredLedger"]


def _higher(a: Position | None, b: Position | None) -> Position | None:
    if a is None or b is None:
        return a if b is None else b
    return max(a, b)


class LayeredLedger:
    """``shared`` (read only, e.g. a ``PostgresLedger`` with a SELECT-only role) over ``local``
    (an SQLite ``Ledger`` this process may write)."""

    backend = "layered"
    mode = "read-only"

    def __init__(self, shared: LedgerBackend, local: LedgerBackend) -> None:
        self.shared = shared
        self.local = local

    def __repr__(self) -> str:
        return f"LayeredLedger(shared={self.shared!r} read-only, local={self.local!r})"

    def _refuse(self, doing: str, artifact: str | None = None) -> LedgerReadOnlyError:
        return LedgerReadOnlyError(
            f"the ledger is read-only here (ledger_mode: read-only): a reader cannot {doing}",
            artifact=artifact,
        )

    # -- writer operations: refused ------------------------------------------------------------

    def record_signature(self, **entry: Any) -> int:
        context = entry.get("context") or {}
        raise self._refuse("record a signature", context.get("artifact"))

    def record_many(self, entries: Iterable[Mapping[str, Any]]) -> list[int]:
        raise self._refuse("record signatures")

    def attach_version(
        self, row_id: int, *, artifact_version: str, aliases: Sequence[str] = ()
    ) -> None:
        raise self._refuse(f"attach a version ({artifact_version!s:.40}) to a signature row")

    @contextmanager
    def history_lock(self, artifact: str) -> Iterator[None]:
        raise self._refuse("take an artifact's history lock (only writers publish)", artifact)
        yield  # pragma: no cover - never reached

    def allocate_sequence(self, artifact: str, *, floor: int) -> int:
        raise self._refuse("allocate a signed sequence (only writers publish)", artifact)

    def allocate_next(self, artifact: str, *, floor: int) -> tuple[int, SeenManifest | None]:
        raise self._refuse("allocate a signed sequence (only writers publish)", artifact)

    def record_version(self, rows: Sequence[int], **version: Any) -> None:
        raise self._refuse("record a published version (only writers publish)")

    # -- reader writes: local only ---------------------------------------------------------------

    def note_seen(self, artifact: str, alias: str, version: int) -> None:
        self.local.note_seen(artifact, alias, version)

    def advance_mark(
        self, artifact: str, alias: str, position: Position, *, source: str
    ) -> None:
        self.local.advance_mark(artifact, alias, position, source=source)

    def record_manifest(
        self,
        artifact: str,
        digest: str,
        position: Position | None,
        *,
        version: str | None,
        source: str,
    ) -> None:
        self.local.record_manifest(artifact, digest, position, version=version, source=source)

    @contextmanager
    def batch(self) -> Iterator[LayeredLedger]:
        """Every write goes to the local ledger: its batch is the one transaction."""
        with self.local.batch():
            yield self

    # -- reads: both, the stronger answer --------------------------------------------------------

    def newest_version(self, artifact: str, *, alias: str = LATEST) -> int | None:
        found = [
            v
            for v in (
                self.shared.newest_version(artifact, alias=alias),
                self.local.newest_version(artifact, alias=alias),
            )
            if v is not None
        ]
        return max(found) if found else None

    def aliases(self, artifact: str) -> dict[str, int]:
        merged = dict(self.shared.aliases(artifact))
        for alias, version in self.local.aliases(artifact).items():
            merged[alias] = max(version, merged.get(alias, version))
        return dict(sorted(merged.items()))

    def find_digest(self, digest: str) -> list[LedgerRow]:
        return [*self.shared.find_digest(digest), *self.local.find_digest(digest)]

    def rows(self, *, artifact: str | None = None) -> list[LedgerRow]:
        return [*self.shared.rows(artifact=artifact), *self.local.rows(artifact=artifact)]

    def count(self) -> int:
        return self.shared.count() + self.local.count()

    def history_mark(self, artifact: str, alias: str) -> Position | None:
        return _higher(
            self.shared.history_mark(artifact, alias), self.local.history_mark(artifact, alias)
        )

    def history_marks(self, artifact: str) -> dict[str, Position]:
        merged = dict(self.shared.history_marks(artifact))
        for alias, position in self.local.history_marks(artifact).items():
            merged[alias] = max(position, merged.get(alias, position))
        return dict(sorted(merged.items()))

    def seen_manifest(self, artifact: str, digest: str) -> SeenManifest | None:
        shared = self.shared.seen_manifest(artifact, digest)
        return shared if shared is not None else self.local.seen_manifest(artifact, digest)

    def seen_manifests(self, artifact: str, digests: Iterable[str]) -> dict[str, SeenManifest]:
        wanted = set(digests)
        found = self.shared.seen_manifests(artifact, wanted)
        rest = wanted - set(found)
        if rest:  # as seen_manifest: the shared ledger's record first, else the local one
            found.update(self.local.seen_manifests(artifact, rest))
        return found

    def newest_seen(self, artifact: str) -> SeenManifest | None:
        found = [
            s
            for s in (self.shared.newest_seen(artifact), self.local.newest_seen(artifact))
            if s is not None and s.position is not None
        ]
        if not found:
            return None
        return max(found, key=lambda s: (s.position, s.digest))

    # -- whole-ledger views (ledger status / migrate) --------------------------------------------

    def marks(self) -> list[tuple[str, str, int, str]]:
        merged: dict[tuple[str, str], tuple[str, str, int, str]] = {}
        for mark in [*export_marks(self.shared), *export_marks(self.local)]:
            held = merged.get(mark[:2])
            if held is None or mark[2] > held[2]:
                merged[mark[:2]] = mark
        return [merged[k] for k in sorted(merged)]

    def history_rows(self) -> dict[str, list[tuple[Any, ...]]]:
        shared, local = export_history(self.shared), export_history(self.local)
        marks: dict[tuple[str, str], tuple[Any, ...]] = {}
        for row in [*shared["marks"], *local["marks"]]:
            held = marks.get(row[:2])
            if held is None or row[2] > held[2]:
                marks[row[:2]] = row
        manifests: dict[tuple[str, str], tuple[Any, ...]] = {}
        for row in [*shared["manifests"], *local["manifests"]]:
            manifests.setdefault((row[0], row[1].digest), row)
        return {
            "sequences": shared["sequences"],
            "marks": [marks[k] for k in sorted(marks)],
            "manifests": list(manifests.values()),
        }

    def status(self) -> dict[str, Any]:
        status = dict(ledger_status(self.shared))
        local = ledger_status(self.local)
        status.update(
            mode=self.mode,
            local_location=local.get("location"),
            local_marks=local.get("history_marks"),
            local_manifests=local.get("manifests"),
        )
        return status

    def ping(self) -> None:
        """Reach the shared ledger now (``LedgerUnavailableError`` if it is not there) and open
        the local one."""
        ping(self.shared)
        self.local.count()

    def durable(self) -> None:
        """The local ledger's barrier (the reader's own rows; the shared one is never written)."""
        self.local.durable()

    def close(self) -> None:
        try:
            self.shared.close()
        finally:
            self.local.close()
