"""The model registry: linking a verified version into ``ENTITY/model-registry/NAME``, and
reading a registered model back only through its signed link statement and the original's
signature.

Online (W&B store, not offline) a link is W&B's own ``Artifact.link``, made through the store's
SDK seam after the version was verified. Locally (the local store, and the W&B store's offline
mirror) the registry is a folder ``<store>/registry/<entity>/<project>/<name>/`` holding one
signed *link statement* per registry version, ``v<K>.link``: a core envelope (serializer
``json``, context role ``registry-link``) whose payload binds the registry name, the registry
version ``vK`` and its aliases to the original artifact (entity, project, name, version, type,
its full signed context) and the SHA-256 of the original's signed manifest. The ledger records
each statement (artifact = the registry's qualified name) with its aliases.

A reader's rollback marks for a registry alias are *signed* values only: the statement's signed
registry version (+ 1), its signed time and its digest (a ``core.history.Position``, kept under
``registry_history_key``). An alias that resolves to an older statement is a rollback; one that
resolves to a different statement with the same registry version (two writers that never shared
a ledger both signed ``vK``, and the older one was put back) is a fork: both are refused with
``RollbackError``. The writer leaves the same marks for its own links, so a reader sharing its
ledger refuses anything earlier.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.envelope_format import format_time
from ..core.errors import (
    ConfigurationError,
    ContextMismatchError,
    RollbackError,
    SecureArtifactError,
    TamperedPayloadError,
)
from ..core.fsutil import InterProcessLock, atomic_write, open_no_follow
from ..core.history import Position, judge
from ..stores.base import (
    ArtifactNotFoundError,
    StoreError,
    check_alias,
    check_artifact_name,
    check_inside,
)
from .config import ReadConfig, WandbArtifactsIOManagerError
from .target import REGISTRY_ROLE, Target, registry_link_context
from .view import manifest_digest

if TYPE_CHECKING:
    from .private_copies import PrivateCopies
    from .session import Session
    from .verification import VerifiedVersion

__all__ = [
    "REGISTRY_ROLE",
    "RegistryLink",
    "RegistryPath",
    "link_verified",
    "list_links",
    "load_registered",
    "parse_registry_path",
    "registry_path_for_input",
]

STATEMENT_FORMAT = "dagster-wandb-secure/registry-link/1"
DEFAULT_REGISTRY_PROJECT = "model-registry"
REGISTRY_DIR = "registry"
MAX_STATEMENT_BYTES = 1 << 20
_STATEMENT_RE = re.compile(r"^v(\d{1,9})\.link$")
_PART_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def is_registry_project(project: str) -> bool:
    return project == DEFAULT_REGISTRY_PROJECT or project.startswith("wandb-registry-")


@dataclass(frozen=True)
class RegistryPath:
    entity: str
    project: str
    name: str

    @property
    def qualified(self) -> str:
        return f"{self.entity}/{self.project}/{self.name}"

    def folder(self, root: Path) -> Path:
        return root / REGISTRY_DIR / self.entity / self.project / self.name


@dataclass(frozen=True)
class RegistryLink:
    """One verified link statement (what ``link()`` returns and audit lists)."""

    path: RegistryPath
    version: int
    aliases: tuple[str, ...]
    source: Mapping[str, Any]
    key_id: str
    algorithm: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    statement_sha256: str = ""  # payload_sha256 of the verified statement envelope (ledger row)
    signed_at: str = ""  # the statement envelope's signed time (canonical text)

    @property
    def position(self) -> Position:
        """Where this statement stands in the collection's signed order (sequence = signed
        registry version + 1: history sequences start at 1)."""
        return Position(self.version + 1, self.signed_at, self.statement_sha256)

    @property
    def version_label(self) -> str:
        return f"v{self.version}"

    @property
    def name(self) -> str:
        return f"{self.path.qualified}:{self.version_label}"

    @property
    def source_label(self) -> str:
        s = self.source
        return f"{s['entity']}/{s['project']}/{s['name']}:{s['version']}"


def registry_history_key(path: RegistryPath) -> str:
    """The ledger key of a registry collection's marks (never an artifact's history key:
    ``#`` is not allowed in artifact names)."""
    return f"{path.qualified}#registry"


def parse_registry_path(target_path: str, default_entity: str) -> RegistryPath:
    """``NAME``, ``model-registry/NAME`` or ``ENTITY/model-registry/NAME`` (W&B's forms; a
    ``wandb-registry-*`` project is accepted too)."""
    if not isinstance(target_path, str) or not target_path.strip():
        raise ConfigurationError(f"registry target path must be a non-empty string, not {target_path!r}")
    parts = target_path.strip().split("/")
    if len(parts) == 1:
        parts = [default_entity, DEFAULT_REGISTRY_PROJECT, parts[0]]
    elif len(parts) == 2:
        parts = [default_entity, *parts]
    if len(parts) != 3 or not all(_PART_RE.fullmatch(p) for p in parts):
        raise ConfigurationError(
            f"registry target path {target_path!r} must look like "
            "'model-registry/NAME' or 'ENTITY/model-registry/NAME'"
        )
    entity, project, name = parts
    if not is_registry_project(project):
        raise ConfigurationError(
            f"registry target path {target_path!r}: {project!r} is not a registry "
            "('model-registry' or 'wandb-registry-*')"
        )
    check_artifact_name(name)
    return RegistryPath(entity, project, name)


def registry_path_for_input(
    asset_path: list[str] | None, name: str | None, default_entity: str
) -> RegistryPath | None:
    """The registry collection an input names, if it names one: an asset key
    ``["model-registry", NAME]`` / ``[ENTITY, "model-registry", NAME]``, or an op input's
    ``name: "model-registry/NAME"``."""
    if asset_path and len(asset_path) in (2, 3) and is_registry_project(asset_path[-2]):
        return parse_registry_path("/".join(asset_path), default_entity)
    if name and "/" in name:
        return parse_registry_path(name, default_entity)
    return None


def _aliases(aliases: Iterable[str] | str | None) -> tuple[str, ...]:
    if aliases is None:
        return ()
    if isinstance(aliases, str):  # upstream's example passes aliases="production"
        aliases = [aliases]
    out: list[str] = []
    for alias in aliases:
        if alias != "latest" and alias not in out:
            out.append(check_alias(alias))
    return tuple(out)


def _registry_root(session: Session) -> Path:
    store = session.store
    for attr in ("local_dir", "root"):
        value = getattr(store, attr, None)
        if value is not None:
            return Path(value)
    raise WandbArtifactsIOManagerError(
        f"the {type(store).__name__} store has no local folder for a model registry"
    )


def _registry_folder(session: Session, path: RegistryPath) -> Path:
    """The collection's folder, refused (``UnsafePathError``) when a symlink planted anywhere
    under ``<store>/registry`` leads it outside the store: the folder is store data."""
    root = _registry_root(session)
    return check_inside(root, path.folder(root), f"the registry folder of {path.qualified}")


def _folder_error(path: RegistryPath, exc: OSError) -> StoreError:
    return StoreError(
        f"the registry folder of {path.qualified} cannot be used: "
        f"{exc.strerror or type(exc).__name__}",
        artifact=path.qualified,
        hint="something that is not a folder (or not readable) is in the store's registry/ "
        "folder: the store was changed outside dagster-wandb-secure; remove it and run "
        "`dagster-wandb-secure audit`",
    )


@contextmanager
def _typed_os_errors(path: RegistryPath) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise _folder_error(path, exc) from None


def _online(session: Session) -> bool:
    return session.store_kind == "wandb" and not session.offline


def _existing_versions(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    out = []
    for child in folder.iterdir():
        m = _STATEMENT_RE.fullmatch(child.name)
        if m:
            out.append(int(m.group(1)))
    return sorted(out)


def link_verified(
    verified: VerifiedVersion, target_path: str, aliases: Iterable[str] | str | None = None
) -> RegistryLink:
    """Link a verified version into a registry collection (see the module docstring)."""
    session = verified.session
    path = parse_registry_path(target_path, session.entity)
    names = _aliases(aliases)
    digest = manifest_digest(verified)
    source = {
        "entity": verified.av.entity,
        "project": verified.av.project,
        "name": verified.av.name,
        "version": verified.av.version_label,
        "type": verified.av.type,
        "manifest_sha256": digest,
        "context": {k: v for k, v in verified.context.items() if k != "role"},
    }
    if _online(session):
        linker = getattr(session.store, "link_version", None)
        if not callable(linker):
            raise WandbArtifactsIOManagerError("this W&B store cannot link artifacts")
        linker(verified.av, path.qualified, list(names))
        return RegistryLink(path, 0, names, source, verified.key_id, verified.algorithm,
                            extra={"wandb": "linked online"})
    from ..core.envelope import seal_with_header

    folder = _registry_folder(session, path)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise _folder_error(path, exc) from None
    _registry_folder(session, path)  # a symlink swapped in while the folders were made
    with _typed_os_errors(path), InterProcessLock(folder / ".lock"):
        known = _existing_versions(folder)
        newest = session.key_store.ledger.newest_version(path.qualified)
        version = max([*known, -1 if newest is None else newest]) + 1
        statement = {
            "format": STATEMENT_FORMAT,
            "registry": path.qualified,
            "registry_version": f"v{version}",
            "aliases": sorted(names),
            "source": source,
            "linked_at": datetime.now(UTC).isoformat(),
        }
        data, header = seal_with_header(
            statement,
            key_store=session.key_store,
            serializer="json",
            context=registry_link_context(path.qualified, path.entity, path.project, version),
            key_id=session.signing_key_id,
            policy=session.policy,
        )
        # the statement's signature row is durable before the link is visible (the rule of
        # publishing.py: nothing becomes visible before its signature is durably recorded)
        session.key_store.ledger.durable()
        atomic_write(folder / f"v{version}.link", data, mode=0o644)
    link = RegistryLink(path, version, names, source, header.kid, header.alg,
                        statement_sha256=header.payload_sha256,
                        signed_at=format_time(header.signed_at))
    ledger = session.key_store.ledger
    with ledger.batch():
        if header.ledger_row is not None:
            ledger.attach_version(header.ledger_row, artifact_version=f"v{version}", aliases=names)
        _note_link(ledger, link, ("latest", *names), source="writer")
    return link


def _note_link(ledger: Any, link: RegistryLink, aliases: Iterable[str], *, source: str) -> None:
    key = registry_history_key(link.path)
    ledger.record_manifest(key, link.statement_sha256, link.position,
                           version=link.version_label, source=source)
    for alias in dict.fromkeys(aliases):
        ledger.advance_mark(key, alias, link.position, source=source)


def _read_statement(
    session_key_store: Any, policy: Any, path: RegistryPath, file: Path, version: int
) -> RegistryLink:
    from ..core.envelope import deserialize, verify_bytes

    with open_no_follow(file) as fh:
        data = fh.read(MAX_STATEMENT_BYTES + 1)
    if len(data) > MAX_STATEMENT_BYTES:
        raise TamperedPayloadError(
            "link statement is larger than any statement this library writes",
            artifact=path.qualified, version=f"v{version}",
        )
    header, payload = verify_bytes(
        data,
        key_store=session_key_store,
        expected_context=registry_link_context(path.qualified, path.entity, path.project, version),
        expected_serializer="json",
        policy=policy,
    )
    doc = deserialize(header, payload, policy)
    if (
        not isinstance(doc, dict)
        or doc.get("format") != STATEMENT_FORMAT
        or doc.get("registry") != path.qualified
        or doc.get("registry_version") != f"v{version}"
        or not isinstance(doc.get("source"), dict)
        or not isinstance(doc.get("aliases"), list)
    ):
        raise ContextMismatchError(
            "the link statement does not describe this registry version",
            artifact=path.qualified, version=f"v{version}", key_id=header.kid,
        )
    return RegistryLink(path, version, tuple(doc["aliases"]), doc["source"], header.kid, header.alg,
                        statement_sha256=header.payload_sha256,
                        signed_at=format_time(header.signed_at))


def find_link(session: Session, path: RegistryPath, read: ReadConfig) -> RegistryLink:
    """The verified link statement a read names (``version``, else ``alias``, default
    ``latest``), rollback-checked against the ledger."""
    folder = _registry_folder(session, path)
    with _typed_os_errors(path):
        versions = _existing_versions(folder)
    ks, policy = session.key_store, session.policy
    if read.version is not None:
        wanted = int(read.version.lstrip("v"))
        if wanted not in versions:
            raise ArtifactNotFoundError(
                f"the registry has no version v{wanted}", artifact=path.qualified
            )
        return _attested(session, _read_statement(ks, policy, path, folder / f"v{wanted}.link", wanted))
    alias = read.alias or "latest"
    chosen: RegistryLink | None = None
    for version in reversed(versions):
        link = _read_statement(ks, policy, path, folder / f"v{version}.link", version)
        if alias == "latest" or alias in link.aliases:
            chosen = link
            break
    if chosen is None:
        raise ArtifactNotFoundError(
            f"no link of the registry carries the alias {alias!r}", artifact=path.qualified
        )
    _attested(session, chosen)
    _check_marks(ks.ledger, chosen, alias)
    _note_link(ks.ledger, chosen, (alias,), source="reader")
    return chosen


def _check_marks(ledger: Any, link: RegistryLink, alias: str) -> None:
    """Refuse an alias whose statement is older than (or forks) the one already accepted for
    it, compared by signed position and digest only (``core.history.judge``)."""
    key = registry_history_key(link.path)
    mark = ledger.history_mark(key, alias)
    mark_seen = ledger.seen_manifest(key, mark.digest) if mark is not None else None
    newest = ledger.newest_seen(key)
    verdict = judge(
        alias=alias,
        candidate=link.position,
        candidate_digest=link.statement_sha256,
        candidate_version=link.version_label,
        mark=mark,
        seen=ledger.seen_manifest(key, link.statement_sha256),
        newest=newest.position if newest is not None else None,
        mark_version=mark_seen.version if mark_seen else None,
    )
    if verdict is not None:
        raise RollbackError(
            f"{verdict.status}: {verdict.reason} (a link statement was removed or replaced)",
            artifact=link.path.qualified, version=link.version_label, key_id=link.key_id,
            hint="read an explicit registry version (version: vK) if that link is really "
            "wanted; otherwise investigate who can write to the store's registry/ folder",
        )


def _attested(session: Session, link: RegistryLink) -> RegistryLink:
    """``require_ledger_record`` applies to the link statement as to any manifest: a statement
    signed with a stolen key but never recorded by a writer re-points nothing."""
    if session.settings.require_ledger_record:
        from .verification import check_recorded

        check_recorded(session, link.path.qualified, link.version_label, link.statement_sha256,
                       link.key_id, what="registry link statement")
    return link


def load_registered(
    session: Session,
    path: RegistryPath,
    read: ReadConfig,
    *,
    private: PrivateCopies,
    dagster_run_id: str | None,
    warn: Callable[[str], None],
) -> tuple[Any, VerifiedVersion, RegistryLink]:
    """Verify the link statement, then the original version it names (its signature, its full
    signed context and its manifest digest), then deliver what ``read`` asks for."""
    from .delivery import deliver
    from .verification import verify_version

    if _online(session):
        raise WandbArtifactsIOManagerError(
            "reading a registered model through the W&B store online is not supported yet",
            artifact=path.qualified,
            hint="read the original artifact (its name and version are in the registry)",
        )
    link = find_link(session, path, read)
    src = link.source
    ctx = src.get("context")
    if (src.get("entity"), src.get("project")) != (session.entity, session.project) or not isinstance(ctx, dict):
        raise WandbArtifactsIOManagerError(
            f"the registered version {link.source_label} is in another project than this IO "
            f"manager's ({session.qualified_project})",
            artifact=path.qualified, version=link.version_label,
            hint="configure the IO manager with the original's entity and project",
        )
    target = Target(
        name=str(src["name"]), partition=ctx.get("partition"), asset_key=ctx.get("asset_key")
    )
    try:
        verified = verify_version(
            session,
            target,
            ReadConfig(version=str(src["version"])),
            private=private,
            dagster_run_id=dagster_run_id,
            bind_asset_key="asset_key" in ctx,
        )
        got = {k: v for k, v in verified.context.items() if k != "role"}
        if got != ctx:
            raise ContextMismatchError(
                "the original version's signed context differs from the one the link binds",
                key_id=verified.key_id,
            )
        if not hmac.compare_digest(manifest_digest(verified), str(src.get("manifest_sha256"))):
            raise TamperedPayloadError(
                "the original version's signed manifest is not the one the link statement "
                "binds",
                key_id=verified.key_id,
            )
    except SecureArtifactError as exc:
        raise exc.with_location(artifact=link.name, version=link.version_label) from None
    value = deliver(verified, ReadConfig(get=read.get, get_path=read.get_path), warn=warn)
    return value, verified, link


def list_links(root: Path, key_store: Any, policy: Any = None) -> Iterator[tuple[RegistryPath, int, RegistryLink | SecureArtifactError]]:
    """Every link statement under a store folder, verified (or the error that refused it)."""
    base = root / REGISTRY_DIR
    if not base.is_dir():
        return
    for entity_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for project_dir in sorted(p for p in entity_dir.iterdir() if p.is_dir()):
            for name_dir in sorted(p for p in project_dir.iterdir() if p.is_dir()):
                try:
                    path = RegistryPath(entity_dir.name, project_dir.name, name_dir.name)
                    parse_registry_path(path.qualified, path.entity)
                except SecureArtifactError:
                    continue
                try:
                    check_inside(root, name_dir, f"the registry folder of {path.qualified}")
                except SecureArtifactError as exc:
                    yield path, 0, exc  # one row says the collection is not read through
                    continue
                for version in _existing_versions(name_dir):
                    try:
                        yield path, version, _read_statement(
                            key_store, policy, path, name_dir / f"v{version}.link", version
                        )
                    except SecureArtifactError as exc:
                        yield path, version, exc


def statement_json(link: RegistryLink) -> str:
    return json.dumps({"registry": link.name, "aliases": list(link.aliases),
                       "source": dict(link.source)}, sort_keys=True)
