"""W&B objects and user-built ``wandb.Artifact``s <-> plain files.

Writing: W&B's own serialization is used (``Artifact.add`` writes ``<name>.<type>.json`` plus any
media files); this module copies those files into the IO manager's staging folder so that the
signed manifest covers exactly the bytes that get published. Nothing here needs a W&B run or a
server: a scratch ``wandb.Artifact`` is only a file-staging helper.

Reading: objects are rebuilt with the public ``from_json`` classmethods from files that were
already verified against the signed manifest. ``VerifiedSource`` plays the part of the source
artifact those methods expect (``get_entry(name).download()``, ``get(name)``, ``manifest``), and
serves only verified private copies. Types whose loader would unpickle (W&B's saved-model types)
are refused.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import SerializationError, UnsafePathError
from ..core.fsutil import open_no_follow, safe_relpath

# Classes whose ``from_json`` reads only JSON and media files (never a pickle).
READABLE_TYPES = frozenset(
    {
        "Table",
        "JoinedTable",
        "PartitionedTable",
        "Image",
        "Audio",
        "Video",
        "Html",
        "Object3D",
        "Molecule",
        "Bokeh",
        "Classes",
        "ImageMask",
        "BoundingBoxes2D",
        "Histogram",
        "Graph",
        "Plotly",
    }
)
MAX_OBJECT_JSON_BYTES = 256 << 20


def _wandb() -> Any:
    import wandb

    return wandb


def _addable_types() -> tuple[type, ...]:
    dt = _wandb().data_types
    names = (
        "Bokeh",
        "JoinedTable",
        "PartitionedTable",
        "Table",
        "Classes",
        "ImageMask",
        "BoundingBoxes2D",
        "Audio",
        "Image",
        "Video",
        "Html",
        "Object3D",
        "Molecule",
    )
    return tuple(getattr(dt, n) for n in names if hasattr(dt, n))


def is_wandb_artifact(obj: Any) -> bool:
    if not _wandb_loaded():
        return False
    return isinstance(obj, _wandb().Artifact)


def is_wandb_object(obj: Any) -> bool:
    """True for the W&B data types the integration stores with W&B's own serialization."""
    if not _wandb_loaded():
        return False
    return isinstance(obj, _addable_types())


def _wandb_loaded() -> bool:

    return "wandb" in sys.modules


@dataclass(frozen=True)
class StagedFiles:
    files: dict[str, Path]  # relative name -> file in the staging folder
    references: list[dict[str, Any]]  # {"name", "uri", "digest", "size"} (not downloaded)


def _copy_into(staging: Path, relpath: str, source: Path) -> Path:
    relpath = safe_relpath(relpath, what="artifact file name")
    target = staging / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        raise UnsafePathError(f"two files would be stored under the same name {relpath!r}")
    if source.is_symlink():  # as add_files: never follow a link, never chmod through one
        raise UnsafePathError(
            f"artifact entry {relpath!r} is the symlink {source}; refusing to follow it",
            hint="add the file itself (or use the default add_file policy, which copies it)",
        )
    with open_no_follow(source) as src, open(target, "xb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    target.chmod(0o600)
    return target


def _collect(artifact: Any, staging: Path) -> StagedFiles:
    files: dict[str, Path] = {}
    refs: list[dict[str, Any]] = []
    for path, entry in sorted(artifact.manifest.entries.items()):
        name = safe_relpath(str(path), what="artifact file name")
        if entry.local_path:
            files[name] = _copy_into(staging, name, Path(entry.local_path))
        elif entry.ref:
            refs.append(
                {
                    "name": name,
                    "uri": str(entry.ref),
                    "digest": str(entry.digest) if entry.digest is not None else None,
                    "size": entry.size,
                }
            )
        else:
            raise SerializationError(f"artifact entry {name!r} has neither a file nor a reference")
    return StagedFiles(files=files, references=refs)


def stage_wandb_object(obj: Any, staging: Path, name: str | None = None) -> StagedFiles:
    """Serialize a W&B object with W&B's own format into ``staging`` (named by its class)."""
    scratch = _wandb().Artifact("dagster-wandb-secure-staging", "staging")
    scratch.add(obj, name or type(obj).__name__)
    return _collect(scratch, staging)


def stage_user_artifact(artifact: Any, staging: Path) -> StagedFiles:
    """Copy the files of a user-built ``wandb.Artifact`` into ``staging`` (references kept)."""
    return _collect(artifact, staging)


# --- reading ----------------------------------------------------------------------------


class _Entry:
    def __init__(self, path: str, resolve: Callable[[str], Path]) -> None:
        self.path = path
        self._resolve = resolve

    def download(self, root: str | None = None, **_: Any) -> str:
        return str(self._resolve(self.path))


class _Manifest:
    def __init__(self, names: list[str], resolve: Callable[[str], Path]) -> None:
        self.entries = {n: _Entry(n, resolve) for n in names}

    def get_entry_by_path(self, path: str) -> _Entry | None:
        return self.entries.get(path)

    def get_entries_in_directory(self, directory: str) -> list[_Entry]:
        prefix = directory.rstrip("/") + "/"
        return [e for n, e in self.entries.items() if n.startswith(prefix)]


class VerifiedSource:
    """The part of W&B's ``Artifact`` that ``from_json`` uses, over verified files only.

    ``resolve(name)`` returns the private verified copy of one file (it verifies lazily). Every
    ``.json`` file handed to W&B's loaders is checked for nested unsafe types first: loaders
    read other JSON files of the artifact themselves (incremental tables, joined and
    partitioned tables), and rebuild every ``_type`` cell they find."""

    def __init__(
        self, names: list[str], resolve: Callable[[str], Path], *, aliases: tuple[str, ...] = ()
    ) -> None:
        self._names = sorted(names)
        self._resolve = resolve
        self.manifest = _Manifest(self._names, self._checked)
        self.aliases = list(aliases)

    def _checked(self, name: str) -> Path:
        path = self._resolve(name)
        if name.endswith(".json"):
            _read_json(path, name, name)
        return path

    def get_entry(self, name: str) -> _Entry:
        name = safe_relpath(str(name), what="artifact file name")
        entry = self.manifest.entries.get(name)
        if entry is None:
            raise KeyError(f"path not contained in artifact: {name}")
        return entry

    def get_path(self, name: str) -> _Entry:
        return self.get_entry(name)

    def get(self, name: str) -> Any:
        return load_wandb_object(self, name)

    def names(self) -> Iterator[str]:
        return iter(self._names)


def find_object_file(names: list[str] | Mapping[str, Any], name: str) -> tuple[str, type] | None:
    """The file holding W&B object ``name`` (``<name>.<type>.json``) and its class, if any."""
    from wandb.sdk.data_types.base_types.wb_value import WBValue

    present = set(names)
    for wb_class in WBValue.type_mapping().values():
        candidate = wb_class.with_suffix(name)
        if candidate in present:
            return candidate, wb_class
    return None


MAX_JSON_DEPTH = 256


def _refuse_unsafe_nested(json_obj: Any, name: str, path: str) -> None:
    """Refuse a nested W&B object whose loader may unpickle (a Table cell is rebuilt by W&B's
    ``init_from_json`` from its ``_type``, bypassing the top-level check); bounded depth."""
    from wandb.sdk.data_types.base_types.wb_value import WBValue

    mapping = WBValue.type_mapping()
    stack: list[tuple[Any, int]] = [(json_obj, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise SerializationError(
                f"W&B object file {path!r} nests deeper than {MAX_JSON_DEPTH} levels"
            )
        if isinstance(value, dict):
            kind = value.get("_type")
            wb_class = mapping.get(kind) if isinstance(kind, str) else None
            if wb_class is not None and wb_class.__name__ not in READABLE_TYPES:
                raise SerializationError(
                    f"W&B object {name!r} holds a nested {kind!r} ({wb_class.__name__}), whose "
                    "loader may unpickle; it is not loaded",
                    hint="store models with a safe serializer (skops, onnx) instead",
                )
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def load_wandb_object(source: VerifiedSource, name: str) -> Any:
    """Rebuild the W&B object stored under ``name`` from verified files; ``None`` if absent."""
    found = find_object_file(list(source.names()), name)
    if found is None:
        return None
    path, wb_class = found
    if wb_class.__name__ not in READABLE_TYPES:
        raise SerializationError(
            f"W&B object {name!r} is a {wb_class.__name__}, whose loader may unpickle; "
            "it is not loaded",
            hint="store models with a safe serializer (skops, onnx) instead",
        )
    local = source.get_entry(path).download()  # verified, and its JSON checked
    json_obj = _read_json(Path(local), path, name)
    if not isinstance(json_obj, dict):
        raise SerializationError(f"W&B object file {path!r} is not a JSON object")
    try:
        return wb_class.from_json(json_obj, source)
    except (KeyError, ValueError, TypeError, _wandb().Error) as exc:
        raise SerializationError(f"W&B object {name!r} could not be rebuilt: {exc}") from exc


def _read_json(local: Path, path: str, name: str) -> Any:
    """Parse a verified JSON file (size-capped) and refuse nested unsafe W&B types."""
    size = local.stat().st_size
    if size > MAX_OBJECT_JSON_BYTES:
        raise SerializationError(f"W&B object file {path!r} is {size} bytes, over the cap")
    try:
        with open(local, encoding="utf-8") as fh:
            json_obj = json.load(fh)
    except (ValueError, RecursionError) as exc:
        raise SerializationError(f"W&B object file {path!r} is not valid JSON: {exc}") from None
    _refuse_unsafe_nested(json_obj, name, path)
    return json_obj


__all__ = [
    "READABLE_TYPES",
    "StagedFiles",
    "VerifiedSource",
    "find_object_file",
    "is_wandb_artifact",
    "is_wandb_object",
    "load_wandb_object",
    "stage_user_artifact",
    "stage_wandb_object",
]
