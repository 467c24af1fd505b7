"""The signed order of an artifact's versions and the reader's rollback / fork / replay verdict.

A format-2 manifest signs a writer-assigned ``sequence`` (per artifact, partition suffix
included), the digest of its ``parent`` manifest envelope and, for a re-signed version, which
original it re-signs. Its *position* in the signed order is ``(sequence, signed_at, digest)``
compared in that order (a deterministic total order, also across writers that never shared a
ledger); a re-signed version takes its original's position, so re-signing never moves history.
Store version numbers (``vN``) are lookup hints and appear nowhere in a decision here.

``judge`` is the one rollback decision used by readers, ``resign`` and ``audit``: given the
reader's mark for (artifact, alias), the manifest it has seen before with this digest (if any),
the newest position it has seen for the artifact and the candidate, it returns ``None``
(accept) or a ``Verdict`` naming the status and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .envelope_format import parse_time
from .keyrecords import MAX_CLOCK_SKEW

__all__ = ["Position", "SeenManifest", "Verdict", "judge", "signed_long_before"]

ROLLED_BACK = "rolled-back"
FORKED = "forked"
REPLAYED = "replayed"


@dataclass(frozen=True, order=True)
class Position:
    """Where a version stands in its artifact's signed order (compare with ``<``)."""

    sequence: int
    signed_at: str  # the envelope's signed_at, canonical text (YYYY-MM-DDTHH:MM:SS.ffffffZ)
    digest: str  # sha256 hex of the manifest envelope that first took this position

    def short(self, version: str | None = None) -> str:
        seen_as = f"{version}, " if version else ""
        return f"seq {self.sequence} ({seen_as}manifest {self.digest[:12]}, signed {self.signed_at})"

    def as_dict(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "signed_at": self.signed_at, "digest": self.digest}


def signed_long_before(earlier: Position, later: Position) -> bool:
    """True when ``earlier`` was signed more than the allowed clock skew (5 minutes) before
    ``later``: two signing times that far apart cannot be a clock difference between writers."""
    try:
        return parse_time(earlier.signed_at) < parse_time(later.signed_at) - MAX_CLOCK_SKEW
    except ValueError:  # positions come from verified manifests; be strict if one is odd
        return True


@dataclass(frozen=True)
class SeenManifest:
    """A manifest envelope a ledger has seen (written or verified) for an artifact."""

    digest: str
    position: Position | None  # None for format-1 manifests (no signed order)
    version: str | None  # the store version it was first seen as (a hint for messages only)


@dataclass(frozen=True)
class Verdict:
    status: str  # rolled-back | forked | replayed
    reason: str


def judge(
    *,
    alias: str,
    candidate: Position | None,
    candidate_digest: str,
    candidate_version: str,
    mark: Position | None,
    seen: SeenManifest | None,
    newest: Position | None,
    mark_version: str | None = None,
) -> Verdict | None:
    """Accept (``None``) or refuse an alias that resolved to a version.

    ``candidate`` is the version's signed position (``None`` for a format-1 manifest),
    ``candidate_digest`` its manifest envelope's digest, ``mark`` the highest position accepted
    for this alias, ``seen`` the earlier sighting of this manifest digest and ``newest`` the
    highest position seen for the artifact under any alias; ``mark_version`` the store version
    the mark was seen as (for the message only)."""
    also = ""
    if seen is not None and seen.version is not None and seen.version != candidate_version:
        also = f"; this manifest was first seen as {seen.version} (re-published under a new number)"
    if mark is not None:
        if candidate is None:
            return Verdict(
                ROLLED_BACK,
                f"alias {alias!r} resolves to a format-1 version without a signed position, but "
                f"{mark.short(mark_version)} was already accepted for it{also}",
            )
        if candidate < mark:
            if candidate.sequence == mark.sequence:
                return Verdict(
                    FORKED,
                    f"alias {alias!r} resolves to {candidate.short(candidate_version)}, a different manifest "
                    f"signed with the same sequence as the accepted {mark.short(mark_version)}, and earlier "
                    f"in the signed order (a fork of the history){also}",
                )
            return Verdict(
                ROLLED_BACK,
                f"alias {alias!r} resolves to {candidate.short(candidate_version)}, older than the "
                f"{mark.short(mark_version)} already accepted for it{also}",
            )
        elif candidate > mark and signed_long_before(candidate, mark):
            # A higher sequence signed well before the accepted version: the accepted one was
            # signed later with a lower sequence, by a writer that was shown the store with this
            # content hidden (no shared ledger); this is the old content resurfacing.
            return Verdict(
                ROLLED_BACK,
                f"alias {alias!r} resolves to {candidate.short(candidate_version)}: a higher "
                f"sequence, but signed more than {_minutes(MAX_CLOCK_SKEW.total_seconds())} "
                f"minutes before the {mark.short(mark_version)} already accepted for it, so it "
                f"is older content (the later version was signed by a writer shown the store "
                f"with this one hidden){also}",
            )
    if seen is not None and seen.version is not None and seen.version != candidate_version:
        older = newest is not None and (candidate is None or candidate < newest)
        if older:
            return Verdict(
                REPLAYED,
                f"alias {alias!r} resolves to {candidate_version}, whose signed manifest "
                f"({candidate_digest[:12]}) was already seen as {seen.version}, and newer "
                "content has been seen since: old content was re-published under a new "
                "version number",
            )
    return None


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g}"
