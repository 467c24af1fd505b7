"""Adopting legacy unsigned artifacts (written by upstream dagster-wandb) into signed versions.

Upstream stored a Python object as ``output.pickle`` / ``.dill`` / ``.cloudpickle`` /
``.joblib`` with no signature. Such a version can never be read through this library. ``adopt``:

1. finds unsigned versions (no signed manifest) holding such files (``find_candidates``);
2. scans every pickle-looking file **statically** with fickling (opcode analysis; nothing is
   imported or unpickled) and reports the findings (``scan_bytes``);
3. only on explicit request (``adopt_version``) re-publishes the version as a NEW version whose
   files are the very bytes that were scanned (every file re-read once into memory, its
   SHA-256 compared with the scan's, pickles re-scanned, and the other files published from a
   private copy of those bytes, so a file swapped after the scan is refused and one swapped
   during the publish is never signed), sealed in an envelope and covered by a signed
   manifest. A flagged scan refuses unless ``allow_flagged=True`` (the CLI names that override
   ``--i-accept-the-risk-of-running-flagged-pickles``);
4. records every signature in the ledger with ``origin="adopted"``, so the audit shows
   "adopted" apart from "signed at write".

A static scan is a warning light, never a security boundary: pickle scanners are deny-lists with
a history of bypasses. Adopt only artifacts whose provenance you trust.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifacts.publishing import publish_signed
from ..artifacts.target import project_path, signed_context
from ..artifacts.verification import files_on_disk
from ..core.digests import DEFAULT_DIGEST
from ..core.errors import (
    ConfigurationError,
    ResourceLimitError,
    SecureArtifactError,
    TamperedPayloadError,
    UnsafePathError,
)
from ..core.fsutil import open_no_follow
from ..core.manifest import MANIFEST_NAME
from ..core.serializers import PICKLE_FAMILY_NAMES

if TYPE_CHECKING:
    from ..core.keys import KeyStore
    from ..stores.base import ArtifactStore, ArtifactVersion

__all__ = [
    "LEGACY_SERIALIZERS",
    "AdoptionCandidate",
    "ScanReport",
    "adopt_version",
    "find_candidates",
    "scan_bytes",
]

LEGACY_SERIALIZERS = PICKLE_FAMILY_NAMES
PICKLE_SUFFIXES = (".pickle", ".pkl", ".dill", ".cloudpickle", ".joblib", ".p")
MAX_SCAN_BYTES = 2 << 30
ADOPTED = "adopted"


@dataclass(frozen=True)
class ScanReport:
    """The static scan of one file. ``flagged`` is anything but a clean, fully parsed stream."""

    path: str
    sha256: str
    size: int
    severity: str
    flagged: bool
    findings: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "severity": self.severity,
            "flagged": self.flagged,
            "findings": list(self.findings),
        }


@dataclass
class AdoptionCandidate:
    """One unsigned version and what the scan found in it."""

    version: ArtifactVersion
    serializer: str | None
    payload: str | None
    scans: list[ScanReport] = field(default_factory=list)
    problem: str | None = None  # why it cannot be adopted at all
    # SHA-256 of every file read by the scan (scanned or not): adopting signs exactly these bytes
    digests: dict[str, str] = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        return any(s.flagged for s in self.scans)

    @property
    def adoptable(self) -> bool:
        return self.problem is None and self.payload is not None

    def as_dict(self) -> dict[str, Any]:
        av = self.version
        return {
            "artifact": f"{av.entity}/{av.project}/{av.name}",
            "version": av.version_label,
            "aliases": list(av.aliases),
            "type": av.type,
            "serializer": self.serializer,
            "payload": self.payload,
            "flagged": self.flagged,
            "adoptable": self.adoptable,
            "problem": self.problem,
            "scans": [s.as_dict() for s in self.scans],
        }


# --- static scan ---------------------------------------------------------------------------


def _looks_like_pickle(name: str, prefix: bytes) -> bool:
    return name.endswith(PICKLE_SUFFIXES) or prefix[:1] == b"\x80"


def scan_bytes(data: bytes, *, path: str = "<bytes>") -> ScanReport:
    """Statically analyse ``data`` as a (stack of) pickle stream(s) with fickling.

    Nothing is imported or executed: fickling decodes opcodes and interprets them symbolically.
    Compressed or non-pickle data cannot be analysed and is flagged."""
    from fickling.analysis import Severity, check_safety
    from fickling.fickle import PickleDecodeError, StackedPickle

    digest = hashlib.sha256(data).hexdigest()
    findings: list[str] = []
    severity = Severity.LIKELY_SAFE
    flagged = False
    if data[:1] != b"\x80" and data[:1] not in (b"(", b"]", b"}", b"c", b"N"):
        kind = (
            "compressed (joblib compress?)"
            if data[:2] in (b"x\x9c", b"\x1f\x8b")
            else ("not a pickle stream")
        )
        return ScanReport(
            path,
            digest,
            len(data),
            "unscannable",
            True,
            (f"{kind}: cannot be analysed statically",),
        )
    try:
        stacked = StackedPickle.load(io.BytesIO(data), fail_on_decode_error=True)
        streams = list(stacked)
    except (PickleDecodeError, ValueError, EOFError, IndexError, KeyError) as exc:
        return ScanReport(
            path,
            digest,
            len(data),
            "unparseable",
            True,
            (
                f"the opcode stream could not be decoded ({type(exc).__name__}: {str(exc)[:200]}); "
                "joblib files with raw numpy buffers and crafted streams both end up here",
            ),
        )
    if not streams:
        return ScanReport(path, digest, len(data), "empty", True, ("no pickle stream found",))
    if len(streams) > 1:
        flagged = True
        findings.append(f"{len(streams)} pickle streams are stacked in one file")
    for pickled in streams:
        try:
            result = check_safety(pickled)
        except Exception as exc:  # noqa: BLE001 - any analyser failure means "flag it"
            flagged = True
            findings.append(f"the analysis failed ({type(exc).__name__}); treat as unsafe")
            continue
        if getattr(pickled, "has_invalid_opcode", False):
            flagged = True
            findings.append("invalid opcode sequence")
        if result.severity > severity:
            severity = result.severity
        for item in getattr(result, "results", ()):
            if getattr(item, "severity", Severity.LIKELY_SAFE) > Severity.LIKELY_SAFE:
                trigger = getattr(item, "trigger", None) or getattr(item, "message", "")
                findings.append(
                    f"{item.severity.name.lower()}: {getattr(item, 'analysis_name', '')} "
                    f"{str(trigger)[:300]}".strip()
                )
    if severity > Severity.LIKELY_SAFE:
        flagged = True
    return ScanReport(
        path,
        digest,
        len(data),
        severity.name.lower().replace("_", "-"),
        flagged,
        tuple(dict.fromkeys(findings)),
    )


# --- finding candidates ----------------------------------------------------------------------


def _read_file(path: Path, limit: int) -> bytes:

    with open_no_follow(path) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ResourceLimitError(f"{path.name} is larger than {limit} bytes; not scanned")
    return data


def inspect_candidate(
    store: ArtifactStore, av: ArtifactVersion, *, max_bytes: int = MAX_SCAN_BYTES
) -> AdoptionCandidate:
    """Scan one version (nothing is changed)."""
    try:
        files = files_on_disk(store, av)
    except SecureArtifactError as exc:
        return AdoptionCandidate(av, None, None, problem=exc.reason)
    if MANIFEST_NAME in files:
        return AdoptionCandidate(av, None, None, problem="already signed (has a manifest)")
    payloads = [
        n
        for n in files
        if "/" not in n and n.startswith("output.") and n.split(".", 1)[1] in LEGACY_SERIALIZERS
    ]
    if len(payloads) > 1:
        return AdoptionCandidate(
            av, None, None, problem=f"several payload files {sorted(payloads)}; adopt by hand"
        )
    payload = payloads[0] if payloads else None
    serializer = payload.split(".", 1)[1] if payload else None
    cand = AdoptionCandidate(av, serializer, payload)
    if payload is None:
        cand.problem = "no output.pickle/.dill/.cloudpickle/.joblib payload"
    for name, path in sorted(files.items()):
        try:
            data = _read_file(path, max_bytes)
        except SecureArtifactError as exc:
            cand.scans.append(ScanReport(name, "", 0, "unreadable", True, (exc.reason,)))
            continue
        cand.digests[name] = hashlib.sha256(data).hexdigest()
        if name == payload or _looks_like_pickle(name, data[:1]):
            cand.scans.append(scan_bytes(data, path=name))
    return cand


def find_candidates(
    store: ArtifactStore,
    *,
    entity: str | None = None,
    project: str | None = None,
    name: str | None = None,
    version: str | None = None,
) -> list[AdoptionCandidate]:
    """Every unsigned version holding a legacy payload, scanned. Signed versions are skipped."""
    out = []
    for av in store.list_versions(entity=entity, project=project, name=name):
        if version is not None and av.version_label != version and str(av.version) != version:
            continue
        cand = inspect_candidate(store, av)
        if cand.problem == "already signed (has a manifest)":
            continue
        out.append(cand)
    return out


# --- sealing raw bytes ---------------------------------------------------------------------


def _pickle_params(serializer: str, data: bytes) -> dict[str, Any]:
    protocol = data[1] if data[:1] == b"\x80" and len(data) > 1 else 0
    if serializer == "joblib":
        return {"compress": 0, "protocol": protocol, "module_version": "adopted"}
    return {"framing": "inband", "protocol": protocol, "module_version": "adopted"}


def adopt_version(
    store: ArtifactStore,
    key_store: KeyStore,
    candidate: AdoptionCandidate,
    *,
    allow_flagged: bool = False,
    asset_key: str | None = None,
    partition: str | None = None,
    digest_alg: str = DEFAULT_DIGEST,
) -> ArtifactVersion:
    """Re-publish a scanned legacy version as a new signed version (``origin="adopted"``),
    its payload and manifest digests under ``digest_alg`` (``core/digests.py``).

    The payload is re-read into memory, its SHA-256 compared with the scan's, and scanned again;
    exactly those bytes are sealed. ``asset_key`` / ``partition`` go into the signed context (the
    Dagster reader expects them: for a one-part upstream asset key the key is the artifact
    name)."""
    av = candidate.version
    label = av.qualified_name
    if not candidate.adoptable:
        raise ConfigurationError(
            f"cannot adopt: {candidate.problem}",
            artifact=label,
            hint="only unsigned versions holding one output.<serializer> file can be adopted",
        )
    if candidate.flagged and not allow_flagged:
        raise TamperedPayloadError(
            "the static scan flagged this artifact: "
            + "; ".join(f for s in candidate.scans for f in s.findings)[:600],
            artifact=label,
            hint="do not adopt it; re-materialize the asset with dagster-wandb-secure instead. "
            "Override only if you are sure: --i-accept-the-risk-of-running-flagged-pickles",
        )
    files = files_on_disk(store, av)
    assert candidate.payload is not None and candidate.serializer is not None
    data = _read_file(files[candidate.payload], MAX_SCAN_BYTES)
    scans = {s.path: s for s in candidate.scans}
    scan = scan_bytes(data, path=candidate.payload)
    if scan.sha256 != scans[candidate.payload].sha256:
        raise TamperedPayloadError(
            f"{candidate.payload} changed since it was scanned",
            artifact=label,
            hint="someone is writing to the store; investigate, then scan again",
        )
    if scan.flagged and not allow_flagged:
        raise TamperedPayloadError("the payload is flagged by the static scan", artifact=label)
    private = Path(tempfile.mkdtemp(prefix="dws-adopt-"))  # ours alone (mode 0700)
    try:
        others, digests = _private_copies(files, candidate, scans, private, allow_flagged, label)
        return _publish_adopted(
            store, key_store, candidate, data, scan, others, digests, asset_key, partition,
            digest_alg,
        )
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _private_copies(
    files: dict[str, Path],
    candidate: AdoptionCandidate,
    scans: dict[str, ScanReport],
    private: Path,
    allow_flagged: bool,
    label: str,
) -> tuple[dict[str, Path], dict[str, str]]:
    """Every file other than the payload, read once into memory, checked against the digest the
    scan recorded (and scanned again if it is or looks like a pickle), and written to a private
    folder: the copies that get signed are the bytes that were checked. A file that changed,
    appeared or vanished since the scan is a TamperedPayloadError."""
    others: dict[str, Path] = {}
    digests: dict[str, str] = {}
    expected = set(candidate.digests) - {candidate.payload}
    present = set(files) - {candidate.payload}
    if candidate.digests and present != expected:
        changed = sorted(present ^ expected)
        raise TamperedPayloadError(
            f"{changed[0]!r} appeared or vanished since the scan", artifact=label
        )
    for rel, path in sorted(files.items()):
        if rel == candidate.payload:
            continue
        if "/" in rel and any(p in {"", ".", ".."} for p in rel.split("/")):
            raise UnsafePathError(f"unsafe file name {rel!r}", artifact=label)
        data = _read_file(path, MAX_SCAN_BYTES)  # the one read: these bytes are signed
        digest = hashlib.sha256(data).hexdigest()
        known = candidate.digests.get(rel) or getattr(scans.get(rel), "sha256", None)
        if known is None or not hmac.compare_digest(digest, known):
            raise TamperedPayloadError(f"{rel} changed since it was scanned", artifact=label)
        if rel in scans or _looks_like_pickle(rel, data[:1]):
            if scan_bytes(data, path=rel).flagged and not allow_flagged:
                raise TamperedPayloadError(f"{rel} is flagged by the static scan", artifact=label)
        copy = private / "files" / rel
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(data)
        others[rel], digests[rel] = copy, digest
    return others, digests


def _publish_adopted(
    store: ArtifactStore,
    key_store: KeyStore,
    candidate: AdoptionCandidate,
    data: bytes,
    scan: ScanReport,
    others: dict[str, Path],
    digests: dict[str, str],
    asset_key: str | None,
    partition: str | None,
    digest_alg: str = DEFAULT_DIGEST,
) -> ArtifactVersion:
    """Seal the checked payload bytes and publish them with the private copies of the others."""
    av = candidate.version
    assert candidate.payload is not None and candidate.serializer is not None
    context = signed_context(
        artifact=av.name,
        type_=av.type,
        project=project_path(av.entity, av.project),
        partition=partition,
        asset_key=asset_key,
    )
    return publish_signed(
        store,
        key_store,
        av,
        payload_name=candidate.payload,
        payload=data,
        serializer=candidate.serializer,
        serializer_version="adopted-legacy",
        serializer_params=_pickle_params(candidate.serializer, data),
        other_files=others,
        expected_digests=digests,
        digest_alg=digest_alg,
        context=context,
        origin=ADOPTED,
        aliases=tuple(av.aliases),
        metadata={
            "dagster_wandb_secure_adopted_from": av.version_label,
            "dagster_wandb_secure_adopted_at": datetime.now(UTC).isoformat(),
            "dagster_wandb_secure_scan": scan.severity,
        },
    )
