"""Copy one ledger into another (``ledger migrate``): signatures and alias marks, idempotent.

Backend-neutral: it reads and writes through ``LedgerBackend`` only, so SQLite -> PostgreSQL
is the usual case, but any pair works. A row is identified by what was signed and recorded
(key, algorithm, digest, length, context, serializer, signing time, run, origin), not by its id
(ids belong to each ledger): a row already in the target is not copied again; if the target's
copy has no version yet and the source's has, the version is attached. Marks only move
forward, so copying them twice changes nothing. The target's ``recorded_at`` is the time of
the copy, and copied marks are recorded as the readers' (``source`` is not carried over).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .ledger import LedgerRow
from .ledger_api import LedgerBackend, export_marks

__all__ = ["MigrationResult", "migrate_ledger"]


@dataclass(frozen=True)
class MigrationResult:
    signatures_copied: int
    signatures_skipped: int
    versions_attached: int
    marks_copied: int

    def to_json(self) -> dict[str, int]:
        return {
            "signatures_copied": self.signatures_copied,
            "signatures_skipped": self.signatures_skipped,
            "versions_attached": self.versions_attached,
            "marks_copied": self.marks_copied,
        }


def _identity(row: LedgerRow) -> tuple[Any, ...]:
    return (
        row.key_id,
        row.alg,
        row.digest,
        row.length,
        row.context_json,
        row.serializer,
        row.signed_at,
        row.run_id,
        row.origin,
    )


def migrate_ledger(source: LedgerBackend, target: LedgerBackend) -> MigrationResult:
    """Copy every signature row and alias mark of ``source`` into ``target``."""
    existing: dict[tuple[Any, ...], list[LedgerRow]] = {}
    for row in target.rows():
        existing.setdefault(_identity(row), []).append(row)
    new_entries: list[dict[str, Any]] = []
    attach: list[tuple[int, str]] = []
    skipped = 0
    for row in source.rows():
        matches = existing.get(_identity(row))
        if matches:
            found = matches.pop(0)  # one target row per source row: duplicates stay duplicates
            skipped += 1
            if found.artifact_version is None and row.artifact_version is not None:
                attach.append((found.id, row.artifact_version))
            continue
        new_entries.append(
            {
                "key_id": row.key_id,
                "alg": row.alg,
                "digest": row.digest,
                "length": row.length,
                "context": row.context,
                "serializer": row.serializer,
                "signed_at": row.signed_at,
                "run_id": row.run_id,
                "artifact_version": row.artifact_version,
                "origin": row.origin,
            }
        )
    marks = export_marks(source)
    with target.batch():
        target.record_many(new_entries)
        for row_id, version in attach:
            target.attach_version(row_id, artifact_version=version)
        for artifact, alias, version, _source in marks:
            target.note_seen(artifact, alias, version)
    return MigrationResult(
        signatures_copied=len(new_entries),
        signatures_skipped=skipped,
        versions_attached=len(attach),
        marks_copied=len(marks),
    )
