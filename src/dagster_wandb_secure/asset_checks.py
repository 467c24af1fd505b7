"""Asset checks that re-verify the latest stored version of each asset, so signature health
shows in the Dagster UI next to the asset.

``build_signature_asset_checks(assets, io_manager_key="io_manager")`` returns one check per
asset. Each check resolves the asset's ``latest`` version through the same IO manager (same key
store, same store), verifies the signed manifest deeply (every file and every envelope payload
hashed; nothing deserialized) and reports the version, key id and algorithm, or the refusal's
type and reason. For a partitioned asset, the latest version of every stored partition is checked:
the partitions come from the asset's partitions definition (pass the ``AssetsDefinition`` or
``SourceAsset``), never from the store's unsigned metadata when the definition is known. A
``SourceAsset`` is checked as the IO manager reads it (signed for its asset key or for none).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetsDefinition,
    PartitionsDefinition,
    SourceAsset,
    asset_check,
)

from .artifacts.binding import read_bound
from .artifacts.config import ReadConfig, WandbArtifactsIOManagerError
from .artifacts.naming import artifact_name, artifact_name_for_asset_key, asset_key_path_string
from .artifacts.target import Target
from .artifacts.verification import verify_version
from .core.errors import SecureArtifactError
from .core.keys import KeyStore
from .core.ledger_api import check_mode, open_ledger, ping
from .stores.base import ArtifactNotFoundError

DEFAULT_CHECK_NAME = "wandb_signature_verified"


@dataclass(frozen=True)
class _Checked:
    """One asset key to check, with what the IO manager's read of it binds."""

    key: AssetKey
    partitions_def: PartitionsDefinition | None  # None: not known (or not partitioned)
    strict: bool  # False for a SourceAsset: no asset key is accepted too, as the IO manager does


def _asset_keys(assets: Iterable[Any]) -> list[_Checked]:
    found: dict[AssetKey, _Checked] = {}
    for item in assets:
        if isinstance(item, AssetsDefinition):
            for key in item.keys:
                found.setdefault(key, _Checked(key, item.partitions_def, True))
        elif isinstance(item, SourceAsset):
            found.setdefault(item.key, _Checked(item.key, item.partitions_def, False))
        elif isinstance(item, AssetKey | str | Sequence):
            if isinstance(item, AssetKey):
                key = item
            elif isinstance(item, str):
                key = AssetKey.from_user_string(item)
            else:
                key = AssetKey(list(item))
            found.setdefault(key, _Checked(key, None, True))
        else:
            raise TypeError(f"cannot build a signature check for {item!r}")
    return list(found.values())


def _engine(resource: Any) -> Any:
    getter = getattr(resource, "engine", None)
    engine = getter() if callable(getter) else resource
    if not (
        callable(getattr(engine, "session", None))
        and callable(getattr(engine, "private_copies", None))
    ):
        raise WandbArtifactsIOManagerError(
            f"the resource given to the signature asset check is a {type(resource).__name__}, "
            "not a WandbArtifactsIOManager / wandb_artifacts_io_manager",
            hint="pass the key of the asset's dagster-wandb-secure IO manager as io_manager_key",
        )
    return engine


def _partition_versions(session: Any, base: str) -> list[tuple[str, str]]:
    """(artifact name, partition key) of every stored partition of ``base``.

    The metadata's partition string is only a hint: it is kept when it encodes back to the
    version's own name, read as one dimension or as ``|``-separated dimension values."""
    found: dict[str, str] = {}
    for av in session.store.list_versions(entity=session.entity, project=session.project):
        if not av.name.startswith(base + "."):
            continue
        info = (av.metadata or {}).get("dagster_wandb_secure") or {}
        partition = info.get("partition") if isinstance(info, dict) else None
        if isinstance(partition, str):
            values = partition.split("|")
            readings: list[Any] = [partition, dict(enumerate(values))]
            for reading in readings:
                try:
                    if artifact_name(base, reading) == av.name:
                        found[av.name] = partition
                except ValueError:
                    continue
    return sorted(found.items())


def _declared_partitions(
    session: Any, base: str, partitions_def: PartitionsDefinition, instance: Any
) -> list[tuple[str, str]]:
    """(artifact name, partition key) of every partition of the definition that is stored."""
    keys = partitions_def.get_partition_keys(dynamic_partitions_store=instance)
    found: list[tuple[str, str]] = []
    for pk in keys:
        name = artifact_name(base, pk)
        if _exists(session, name):
            found.append((name, str(pk)))
    return found


def verify_latest(
    resource: Any,
    key: AssetKey,
    run_id: str | None,
    *,
    partitions_def: PartitionsDefinition | None = None,
    strict: bool = True,
    instance: Any = None,
    ledger: str | None = None,
    ledger_mode: str | None = None,
) -> AssetCheckResult:
    """Deep-verify the latest version of ``key`` (and of each of its stored partitions).

    With ``partitions_def`` every partition it declares that is stored is checked (the store's
    metadata is unsigned and cannot be trusted to list them); without it, partitions are
    found from the store's metadata. The asset key is always bound; ``strict=False`` for a
    SourceAsset also accepts a version signed with no asset key, as the IO manager reads it."""

    engine = _engine(resource)
    session = engine.session(run_id)
    if ledger:
        session = _with_ledger(session, ledger, ledger_mode)
    private = engine.private_copies(session, run_id)
    base = artifact_name_for_asset_key(list(key.path))
    asset_key = asset_key_path_string(list(key.path))
    if partitions_def is not None:
        found = _declared_partitions(session, base, partitions_def, instance)
        targets = [Target(name=name, partition=pk, asset_key=asset_key) for name, pk in found]
    elif _exists(session, base):
        targets = [Target(name=base, partition=None, asset_key=asset_key)]
    else:
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
            v = read_bound(
                lambda t: verify_version(
                    session,
                    t,
                    ReadConfig(),
                    private=private,
                    dagster_run_id=None,
                    bind_asset_key=True,
                    deep=True,
                ),
                target,
                strict=strict,
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


def _with_ledger(session: Any, ledger: str, mode: str | None = None) -> Any:
    """The session with its key store reading ``ledger`` (a URL, or a dagster ``EnvVar``)."""


    getter = getattr(ledger, "get_value", None)  # dagster.EnvVar: resolved when the check runs
    spec = str(getter()) if callable(getter) else str(ledger)
    key_store = KeyStore.open(session.key_store.path, create=False)
    opened = open_ledger(spec, key_store.path, mode=mode)
    ping(opened)
    key_store.attach_ledger(opened)
    return dataclasses.replace(session, key_store=key_store)


def _exists(session: Any, name: str) -> bool:

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
    ledger: str | None = None,
    ledger_mode: str | None = None,
) -> list[AssetChecksDefinition]:
    """One asset check per asset key that re-verifies its latest stored signed version.

    ``io_manager_key`` names the ``WandbArtifactsIOManager`` / ``wandb_artifacts_io_manager``
    resource holding the key store and store configuration (the asset's own IO manager).
    ``ledger`` (a ``postgresql://`` URL or a ``dagster.EnvVar`` naming one) checks against that
    ledger instead of the IO manager's; ``ledger_mode="read-only"`` for a role that may only
    SELECT on it (the check's marks then stay in the key store, as the IO manager's)."""
    check_mode(ledger_mode)  # LedgerError now, not when the check runs
    checks: list[AssetChecksDefinition] = []
    for item in _asset_keys(assets):
        checks.append(_make_check(item, io_manager_key, name, blocking, ledger, ledger_mode))
    return checks


def _make_check(
    item: _Checked,
    io_manager_key: str,
    name: str,
    blocking: bool,
    ledger: str | None = None,
    ledger_mode: str | None = None,
) -> AssetChecksDefinition:
    @asset_check(
        asset=item.key,
        name=name,
        blocking=blocking,
        required_resource_keys={io_manager_key},
        description="Re-verifies the signature of the latest stored W&B artifact version",
    )
    def _check(context) -> AssetCheckResult:  # type: ignore[no-untyped-def]  # noqa: ANN001
        # (no annotation: Dagster cannot resolve postponed annotations of `context`)
        resource = getattr(context.resources, io_manager_key)
        return verify_latest(
            resource,
            item.key,
            context.op_execution_context.run_id,
            partitions_def=item.partitions_def,
            strict=item.strict,
            instance=context.instance,
            ledger=ledger,
            ledger_mode=ledger_mode,
        )

    return _check


__all__ = ["DEFAULT_CHECK_NAME", "build_signature_asset_checks", "verify_latest"]
