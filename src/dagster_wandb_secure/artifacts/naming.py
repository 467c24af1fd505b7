"""Artifact names from Dagster asset keys, op outputs and partition keys: one injective encoding.

W&B artifact names allow ``[A-Za-z0-9_.-]``, 1 to 128 characters. A name is ``BASE`` or
``BASE.SUFFIX``: ``BASE`` comes from the asset key and never contains ``.``, so the first ``.``
always separates it from the partition ``SUFFIX``. A *digest mark* is ``-h`` followed by the first 8
hex digits of the SHA-256 of the original (UTF-8) text; a readable form that is left unchanged never
ends with something that looks like one, so a marked form and a plain form are never equal.

``BASE`` for the asset key path ``p1/.../pn``:

- one part matching ``[A-Za-z0-9_-]+`` (at most 128 characters, not ending like a digest mark):
  the part itself, exactly as upstream does (``my_artifact``, ``my-dataset``);
- anything else (several parts, a ``.`` or an illegal character, too long, or ending like a digest
  mark): the parts joined with ``-``, every character outside ``[A-Za-z0-9_-]`` replaced by ``_``,
  then the digest mark of the parts joined with NUL (``a/b`` -> ``a-b-h<digest>``; ``a-b`` stays
  ``a-b``; ``x.y`` -> ``x_y-h<digest>``).

``SUFFIX`` for a partition key (none for an unpartitioned output):

- a single-dimension key matching ``[A-Za-z0-9_.-]+`` and not ending like a digest mark: the key
  itself (``2024-01-01``); anything else: illegal characters (including ``|``) replaced by ``_``,
  then the digest mark of the key (``a|b`` -> ``a_b-h<digest>``, ``a-b`` stays ``a-b``);
- a multi-dimension key (values in the order of their sorted dimension names, as Dagster prints
  ``v1|v2``): the values joined with ``-`` when every value matches ``[A-Za-z0-9_.-]+``, no value but
  the last contains ``-`` (so the split is unique) and the result does not end like a digest mark
  (``red|2024-01-01`` -> ``red-2024-01-01``); anything else: the joined values sanitized, then the
  digest mark of the values joined with ``|`` (of their JSON list if a value contains ``|``), so
  ``a|b-c`` -> ``a-b-c`` and ``a-b|c`` -> ``a-b-c-h<digest>``.

A name over 128 characters keeps its first 118 and gets the digest mark of the whole name.
Two different inputs can share a name only if two truncated digests collide; the signed context of
every version binds the exact asset key and partition key, so even then a reader refuses the other
input's data (``ContextMismatchError``). One asset has one partitions definition, so its single-
and multi-dimension keys never meet under one ``BASE``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..stores.base import ARTIFACT_NAME_RE

MAX_NAME_LENGTH = 128
_DIGEST_CHARS = 8
_PLAIN_PART = re.compile(r"[A-Za-z0-9_-]+")
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.-]+")
_NOT_BASE = re.compile(r"[^A-Za-z0-9_-]")
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.-]")
_DIGEST_MARK = re.compile(rf"-h[0-9a-f]{{{_DIGEST_CHARS}}}\Z")



def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]


def _marked(readable: str, original: str) -> str:
    """``readable`` plus the digest mark of ``original``, within the length limit."""
    suffix = "-h" + _digest(original)
    return readable[: MAX_NAME_LENGTH - len(suffix)] + suffix


def _plain(text: str, pattern: re.Pattern[str]) -> bool:
    return (
        len(text) <= MAX_NAME_LENGTH
        and pattern.fullmatch(text) is not None
        and _DIGEST_MARK.search(text) is None
    )


def asset_key_path_string(path: Sequence[str]) -> str:
    """The asset key as Dagster prints it (``a/b``); this is what the signed context binds."""
    return "/".join(path)


def artifact_name_for_asset_key(path: Sequence[str]) -> str:
    """The W&B artifact (collection) name for an asset key path (``BASE`` above)."""
    parts = [str(p) for p in path]
    if not parts:
        raise ValueError("an asset key has at least one part")
    if len(parts) == 1 and _plain(parts[0], _PLAIN_PART):
        return parts[0]
    readable = "-".join(_NOT_BASE.sub("_", part) for part in parts)
    return _marked(readable, "\x00".join(parts))


def dimension_values(partition_key: Any) -> tuple[str, ...] | None:
    """The values of a multi-dimension key in sorted dimension-name order, or None for a
    single-dimension key. Accepts a mapping or anything with ``keys_by_dimension`` (Dagster's
    ``MultiPartitionKey``, recognised without importing Dagster)."""
    dims = partition_key if isinstance(partition_key, Mapping) else None
    if dims is None:
        dims = getattr(partition_key, "keys_by_dimension", None)
    if not isinstance(dims, Mapping):
        return None
    return tuple(str(dims[k]) for k in sorted(dims))


def partition_suffix(partition_key: Any) -> str:
    """The name suffix for a partition key (``SUFFIX`` above)."""
    values = dimension_values(partition_key)
    if values is None:
        text = str(partition_key)
        if _plain(text, _PLAIN_VALUE):
            return text
        return _marked(_NOT_NAME.sub("_", text), text)
    readable = "-".join(values)
    if (
        all(_PLAIN_VALUE.fullmatch(v) for v in values)
        and not any("-" in v for v in values[:-1])
        and _plain(readable, _PLAIN_VALUE)
    ):
        return readable
    original = json.dumps(list(values)) if any("|" in v for v in values) else "|".join(values)
    return _marked(_NOT_NAME.sub("_", readable), original)


def artifact_name(base: str, partition_key: Any = None) -> str:
    """``base`` or ``base.<suffix>``, checked to be a legal W&B name.

    ``partition_key`` is a string (one dimension), a mapping of dimension name to value or a
    Dagster ``MultiPartitionKey`` (several dimensions), or None."""
    if partition_key is None:
        name = base
    else:
        name = f"{base}.{partition_suffix(partition_key)}"
    if len(name) > MAX_NAME_LENGTH:
        name = _marked(name, name)
    if not ARTIFACT_NAME_RE.fullmatch(name) or name in {".", ".."}:
        raise ValueError(f"{name!r} is not a legal W&B artifact name")
    return name


def run_alias(run_id: str) -> str:
    """The alias every version written by a Dagster run gets: ``dagster-run-<first 8 chars>``."""
    return f"dagster-run-{run_id[:8]}"


def default_run_name(run_id: str) -> str:
    return f"dagster-run-{run_id[:8]}"


__all__ = [
    "MAX_NAME_LENGTH",
    "artifact_name",
    "artifact_name_for_asset_key",
    "asset_key_path_string",
    "default_run_name",
    "dimension_values",
    "partition_suffix",
    "run_alias",
]
