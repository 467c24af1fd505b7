"""What an output is written to or an input read from, and the signed context that binds it.

The signed context is the security contract between a writer and its readers: every envelope
and manifest carries it, every reader states what it expects. It is built here and nowhere else
(publishing, verification, adopt, audit and resign all call these functions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "REGISTRY_ROLE",
    "Target",
    "project_path",
    "registry_link_context",
    "signed_context",
    "version_context",
]

# the role of a model-registry link statement in its signed context (payloads have none, a
# manifest's role is core.manifest.MANIFEST_ROLE)
REGISTRY_ROLE = "registry-link"


def project_path(entity: str | None, project: str | None) -> str:
    """``entity/project`` as bound in the signed context, so a version copied into another
    project's artifact of the same name is refused."""
    return f"{entity}/{project}"


def signed_context(
    *,
    artifact: str,
    type_: str,
    project: str,
    partition: str | None,
    asset_key: str | None = None,
    bind_asset_key: bool = True,
) -> dict[str, str | None]:
    """The full signed context of a version written for (or read as) one Dagster output.

    ``bind_asset_key=False`` leaves ``asset_key`` unstated (a reader that does not know the
    writer's asset key, such as an op input); a stated key with value ``None`` must be absent or
    null in the header."""
    ctx: dict[str, str | None] = {
        "artifact": artifact,
        "type": type_,
        "partition": partition,
        "project": project,
    }
    if bind_asset_key:
        ctx["asset_key"] = asset_key
    return ctx


def version_context(av: Any) -> dict[str, str | None]:
    """What any reader of the store version ``av`` expects, whoever wrote it: its own artifact
    name, type and project (partition and asset key are not stated: maintenance operations read
    versions without knowing which output wrote them)."""
    return {
        "artifact": av.name,
        "type": av.type,
        "project": project_path(av.entity, av.project),
    }


def registry_link_context(
    registry: str, entity: str, project: str, version: int
) -> dict[str, str | None]:
    """The signed context of link statement ``v<version>`` of registry collection ``registry``
    (``entity/project/name``): every value is fixed by where the statement is stored (the
    original's type is in the signed payload)."""
    return {
        "role": REGISTRY_ROLE,
        "artifact": registry,
        "type": None,
        "project": project_path(entity, project),
        "partition": None,
        "registry_version": f"v{version}",
    }


@dataclass(frozen=True)
class Target:
    """Which artifact an output is written to or an input read from."""

    name: str  # artifact name including the partition suffix
    partition: str | None
    asset_key: str | None

    def context(
        self, type_: str, project: str, *, bind_asset_key: bool = True
    ) -> dict[str, str | None]:
        """The signed context for this target (see ``signed_context``)."""
        return signed_context(
            artifact=self.name,
            type_=type_,
            project=project,
            partition=self.partition,
            asset_key=self.asset_key,
            bind_asset_key=bind_asset_key,
        )
