"""What W&B's own records say about artifacts: names checked, versions listed, versions described.

Everything here is a hint (W&B's records are attacker-controlled like the files): names become
folder names only after the artifact-name rule, version labels are parsed strictly, and the
``ArtifactVersion`` built from a W&B record is checked by the verifier above the store against
the signed manifest before anything is acted on. Nothing here downloads a file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .base import (
    ArtifactVersion,
    FileEntry,
    StoreError,
    check_artifact_name,
    check_name_part,
    parse_version_label,
)
from .wandb_run import attr_obj, attr_str

log = logging.getLogger(__name__)

# --- configuration checks -----------------------------------------------------------------------

# entity, project and type follow the artifact-name rule, as in the local store (they become
# folder names in the cache and the mirror)


def check_entity(entity: object) -> str:
    return check_name_part(
        entity, "W&B entity", "set 'entity' in wandb_config to your W&B user or team name"
    )


def check_project(project: object) -> str:
    return check_name_part(project, "W&B project", "set 'project' in wandb_config to a W&B project")


def check_artifact_type(type_: object) -> str:
    return check_name_part(type_, "artifact type")


# --- listing ------------------------------------------------------------------------------------


def online_versions(
    api: Callable[[str], Any],
    entity: str,
    project: str,
    name: str | None,
    *,
    errors: tuple[type[BaseException], ...],
    scrub: Callable[[object], str],
) -> Iterator[tuple[str, str, str, Any, str]]:
    """(entity, project, name, W&B artifact, qualified name) of every version W&B lists,
    except W&B's own ``wandb-*`` types, by name and version number; nothing downloaded.
    ``api(what)`` builds the ``wandb.Api`` (after the names are checked); ``errors`` are the
    SDK's exception types that become ``StoreError``."""
    entity = check_entity(entity)
    project = check_project(project)
    if name is not None:
        check_artifact_name(name)
    where = f"{entity}/{project}"
    client = api(f"listing artifacts of {where}")
    try:
        collections = [
            c
            for t in client.artifact_types(project=where)
            # W&B's own bookkeeping types (run history, ...) are not artifacts of this store
            if not str(attr_str(t, "name") or "").startswith("wandb-")
            for c in t.collections()
            if name is None or c.name == name
        ]
    except (*errors, ValueError) as exc:
        raise StoreError(
            f"W&B could not list the artifacts of {where}: {scrub(exc)}",
            artifact=f"{where}/{name}" if name else where,
            hint="check the host, the API key and network access",
        ) from exc
    for collection in collections:
        cname = check_artifact_name(collection.name)
        try:
            versions = list(collection.artifacts())
        except (*errors, ValueError) as exc:
            raise StoreError(
                f"W&B could not list the versions: {scrub(exc)}",
                artifact=f"{where}/{cname}",
                hint="check the host, the API key and network access",
            ) from exc
        for artifact in sorted(
            versions, key=lambda a: parse_version_label(attr_str(a, "version"), cname)
        ):
            yield entity, project, cname, artifact, f"{where}/{cname}:{attr_str(artifact, 'version')}"


# --- describing ---------------------------------------------------------------------------------


def describe(
    artifact: Any,
    entity: str,
    project: str,
    name: str,
    version: int,
    files: Mapping[str, FileEntry],
    root: Path,
    run_info: Mapping[str, str | None],
) -> ArtifactVersion:
    """The version as W&B records it (hints only), with the cached ``files`` in ``root``."""
    metadata = dict(attr_obj(artifact, "metadata") or {})
    created_by = metadata.get("source_dagster_run_id")
    return ArtifactVersion(
        entity=entity,
        project=project,
        name=name,
        version=version,
        type=str(attr_str(artifact, "type") or ""),
        description=attr_str(artifact, "description"),
        metadata=metadata,
        aliases=tuple(str(a) for a in (attr_obj(artifact, "aliases") or ())),
        files=files,
        created_at=parse_time(attr_str(artifact, "created_at")),
        created_by_run=created_by if isinstance(created_by, str) else None,
        root=root,
        extra={"wandb_mode": "online", **artifact_extra(artifact), **run_info},
    )


def artifact_extra(artifact: Any) -> dict[str, Any]:
    """W&B's id, URL and size of ``artifact``, where it has them (for ``ArtifactVersion.extra``)."""
    extra = {
        "wandb_artifact_id": attr_str(artifact, "id"),
        "wandb_artifact_url": attr_str(artifact, "url"),
        "wandb_artifact_size": attr_obj(artifact, "size"),
    }
    return {k: v for k, v in extra.items() if v is not None}


def parse_time(value: str | None) -> datetime:
    """W&B's ``created_at``; an unparseable one becomes the current time (it is a hint: the
    signed time is in the manifest)."""
    if value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            log.warning("W&B returned an unparseable created_at %r; using the current time", value)
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)
