"""Asset checks that re-verify the latest stored version of each asset, so signature health
shows in the Dagster UI next to the asset.

``build_signature_asset_checks(assets, io_manager_key="io_manager")`` returns one check per
asset. Each check resolves the asset's ``latest`` version through the same IO manager (same key
store, same store), verifies the signed manifest deeply (every file and every envelope payload
hashed; nothing deserialized) and reports the version, key id and algorithm, or the refusal's
type and reason. For a partitioned asset, the latest version of every stored partition is checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetsDefinition,
    SourceAsset,
    asset_check,
)

from .config import ReadConfig
from .core.errors import SecureArtifactError
from .naming import artifact_name, artifact_name_for_asset_key, asset_key_path_string
from .publishing import Target

DEFAULT_CHECK_NAME = "wandb_signature_verified"


def _asset_keys(assets: Iterable[Any]) -> list[AssetKey]:
    keys: list[AssetKey] = []
    for item in assets:
        if isinstance(item, AssetsDefinition):
            keys.extend(item.keys)
        elif isinstance(item, SourceAsset):
            keys.append(item.key)
        elif isinstance(item, AssetKey):
            keys.append(item)
        elif isinstance(item, str):
            keys.append(AssetKey.from_user_string(item))
        elif isinstance(item, Sequence):
            keys.append(AssetKey(list(item)))
        else:
            raise TypeError(f"cannot build a signature check for {item!r}")
    return list(dict.fromkeys(keys))


def _engine(resource: Any) -> Any:
    getter = getattr(resource, "engine", None)
    return getter() if callable(getter) else resource


def _partition_versions(session: Any, base: str) -> list[tuple[str, str]]:
    """(artifact name, partition key) of every stored partition of ``base``."""
    found: dict[str, str] = {}
    for av in session.store.list_versions(entity=session.entity, project=session.project):
        if not av.name.startswith(base + "."):
            continue
        info = (av.metadata or {}).get("dagster_wandb_secure") or {}
        partition = info.get("partition") if isinstance(info, dict) else None
        if isinstance(partition, str):
            try:
                if artifact_name(base, partition) == av.name:
                    found[av.name] = partition
            except ValueError:
                continue
    return sorted(found.items())


def verify_latest(resource: Any, key: AssetKey, run_id: str | None) -> AssetCheckResult:
    """Deep-verify the latest version of ``key`` (and of each of its stored partitions)."""
    from .verification import verify_version

    engine = _engine(resource)
    session = engine.session(run_id)
    private = engine.private_copies(session, run_id)
    base = artifact_name_for_asset_key(list(key.path))
    asset_key = asset_key_path_string(list(key.path))
    targets = [Target(name=base, partition=None, asset_key=asset_key)]
    if not _exists(session, base):
        targets = [
            Target(name=name, partition=pk, asset_key=asset_key)
            for name, pk in _partition_versions(session, base)
        ]
    if not targets:
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.WARN,
            description=f"no stored version of {base!r} was found",
            metadata={"artifact": base},
        )
    checked: list[str] = []
    for target in targets:
        try:
            v = verify_version(
                session,
                target,
                ReadConfig(),
                private=private,
                dagster_run_id=None,
                deep=True,
            )
        except SecureArtifactError as exc:
            return AssetCheckResult(
                passed=False,
                severity=AssetCheckSeverity.ERROR,
                description=str(exc),
                metadata={
                    "artifact": exc.artifact or target.name,
                    "version": exc.version or "",
                    "key_id": exc.key_id or "",
                    "error": type(exc).__name__,
                    "reason": exc.reason,
                },
            )
        checked.append(f"{v.av.name}:{v.av.version_label} ({v.key_id}, {v.algorithm})")
    return AssetCheckResult(
        passed=True,
        metadata={"verified": "; ".join(checked), "versions_checked": len(checked)},
    )


def _exists(session: Any, name: str) -> bool:
    from .stores.base import ArtifactNotFoundError

    try:
        session.store.resolve(session.entity, session.project, name, alias="latest")
    except ArtifactNotFoundError:
        return False
    return True


def build_signature_asset_checks(
    assets: Iterable[AssetsDefinition | SourceAsset | AssetKey | str | Sequence[str]],
    *,
    io_manager_key: str = "io_manager",
    name: str = DEFAULT_CHECK_NAME,
    blocking: bool = False,
) -> list[AssetChecksDefinition]:
    """One asset check per asset key that re-verifies its latest stored signed version.

    ``io_manager_key`` names the ``WandbArtifactsIOManager`` / ``wandb_artifacts_io_manager``
    resource holding the key store and store configuration (the asset's own IO manager)."""
    checks: list[AssetChecksDefinition] = []
    for key in _asset_keys(assets):
        checks.append(_make_check(key, io_manager_key, name, blocking))
    return checks


def _make_check(
    key: AssetKey, io_manager_key: str, name: str, blocking: bool
) -> AssetChecksDefinition:
    @asset_check(
        asset=key,
        name=name,
        blocking=blocking,
        required_resource_keys={io_manager_key},
        description="Re-verifies the signature of the latest stored W&B artifact version",
    )
    def _check(context) -> AssetCheckResult:  # type: ignore[no-untyped-def]  # noqa: ANN001
        # (no annotation: Dagster cannot resolve postponed annotations of `context`)
        resource = getattr(context.resources, io_manager_key)
        return verify_latest(resource, key, context.op_execution_context.run_id)

    return _check


__all__ = ["DEFAULT_CHECK_NAME", "build_signature_asset_checks", "verify_latest"]
