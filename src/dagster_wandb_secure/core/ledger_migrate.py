"""Copy one ledger into another (``ledger migrate``): signatures, marks and history, idempotent.

Backend-neutral: it reads and writes through ``LedgerBackend`` only, so SQLite -> PostgreSQL
is the usual case, but any pair works. A row is identified by what was signed and recorded
(key, algorithm, digest, length, context, serializer, signing time, run, origin), not by its id
(ids belong to each ledger): a row already in the target is not copied again; if the target's
copy has no version yet and the source's has, the version is attached. Marks only move
forward, so copying them twice changes nothing. The target's ``recorded_at`` is the time of
the copy, and copied schema-1 marks are recorded as the readers' (``source`` is not carried
over).

The signed history is copied through the history interface, so every copy is safe to repeat and
safe against a live target: a sequence counter is raised to at least the source's (never lowered,
so no sequence is ever handed out twice), a history mark only moves forward, and a seen manifest
keeps the target's first sighting if it has one. The counts say what changed (a second run: 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .ledger import LedgerRow
from .ledger_api import LedgerBackend, export_history, export_marks

__all__ = ["MigrationResult", "migrate_ledger"]


@dataclass(frozen=True)
class MigrationResult:
    signatures_copied: int
    signatures_skipped: int
    versions_attached: int
    marks_copied: int
    sequences_raised: int = 0
    history_marks_advanced: int = 0
    manifests_copied: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "signatures_copied": self.signatures_copied,
            "signatures_skipped": self.signatures_skipped,
            "versions_attached": self.versions_attached,
            "marks_copied": self.marks_copied,
            "sequences_raised": self.sequences_raised,
            "history_marks_advanced": self.history_marks_advanced,
            "manifests_copied": self.manifests_copied,
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
    """Copy every signature row, alias mark and history record of ``source`` into ``target``."""
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
    history, have = export_history(source), export_history(target)
    have_last = dict(have["sequences"])
    raise_to = [(a, n) for a, n in history["sequences"] if have_last.get(a, 0) < n]
    have_marks = {(a, alias): position for a, alias, position, _src in have["marks"]}
    advance = [
        m for m in history["marks"] if (old := have_marks.get((m[0], m[1]))) is None or old < m[2]
    ]
    have_seen = {(a, seen.digest) for a, seen, _src in have["manifests"]}
    manifests = [m for m in history["manifests"] if (m[0], m[1].digest) not in have_seen]
    with target.batch():
        target.record_many(new_entries)
        for row_id, version in attach:
            target.attach_version(row_id, artifact_version=version)
        for artifact, alias, version, _source in marks:
            target.note_seen(artifact, alias, version)
        for artifact, seen, src in manifests:
            target.record_manifest(
                artifact, seen.digest, seen.position, version=seen.version, source=src
            )
        for artifact, alias, position, src in advance:
            target.advance_mark(artifact, alias, position, source=src)
    for artifact, last in raise_to:
        # max(target's last, last - 1) + 1 >= last: raised, never lowered, never reused. Not in
        # the batch: a sequence handed out is spent even if the rest were rolled back.
        target.allocate_sequence(artifact, floor=last - 1)
    return MigrationResult(
        signatures_copied=len(new_entries),
        signatures_skipped=skipped,
        versions_attached=len(attach),
        marks_copied=len(marks),
        sequences_raised=len(raise_to),
        history_marks_advanced=len(advance),
        manifests_copied=len(manifests),
    )
