"""Helpers for tests that run the IO manager in real Dagster runs over the local store: the
registry writer's actions on the store (publish, read and loosen version files) and run helpers
(read an asset back, render a failed step's error chain)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dagster import AssetIn, asset, materialize
from dagster_wandb_secure.stores.local import LocalArtifactStore

# what tests/dagster/conftest.py's ``make_io_manager`` writes to
ENTITY, PROJECT = "team", "proj"


def failure_text(result: Any) -> str:
    parts: list[str] = []
    err = result.get_step_failure_events()[0].event_specific_data.error
    while err is not None:
        parts.append(f"{err.cls_name}: {err.message}")
        err = err.cause or err.context
    return "\n".join(parts)


def store_of(store_dir: Path) -> LocalArtifactStore:
    return LocalArtifactStore(store_dir)


def version_files(store_dir: Path, name: str, version: str | None = None) -> dict[str, Path]:
    """The files of ``name``'s ``latest`` version, or of ``version`` (``"v0"``, ...)."""
    store = store_of(store_dir)
    if version is None:
        av = store.resolve(ENTITY, PROJECT, name, alias="latest")
    else:
        av = store.resolve(ENTITY, PROJECT, name, version=version)
    return {rel: av.root / rel for rel in av.files}


def attacker_publish(store_dir: Path, name: str, files: dict[str, Path], **kw: Any) -> Any:
    kw.setdefault("type", "artifact")
    return store_of(store_dir).publish(entity=ENTITY, project=PROJECT, name=name, files=files, **kw)


def writable(path: Path) -> Path:
    os.chmod(path.parent, 0o700)
    if path.exists():
        os.chmod(path, 0o600)
    return path


def read_via(
    iom: Any, upstream: Any, *, source: bool = True, instance: Any = None, **read_config: Any
) -> Any:
    """Materialize a reader of ``upstream`` (as a SourceAsset when ``source``) on ``instance``
    (default: an ephemeral one); returns the result with ``.seen['value']`` set on success."""
    meta = {"wandb_artifact_configuration": read_config} if read_config else None
    seen: dict[str, Any] = {}

    @asset(ins={"value": AssetIn(key=upstream.key, input_manager_key="m", metadata=meta)})
    def reader(value: Any) -> None:
        seen["value"] = value

    defs = [upstream.to_source_asset() if source else upstream, reader]
    result = materialize(defs, resources={"m": iom}, selection=[reader], raise_on_error=False,
                         instance=instance)
    result.seen = seen  # type: ignore[attr-defined]
    return result
