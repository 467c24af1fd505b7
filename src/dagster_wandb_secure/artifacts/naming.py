"""Artifact names from Dagster asset keys, op outputs and partition keys.

Rules (W&B artifact names allow letters, digits, ``-``, ``_`` and ``.``, at most 128 characters):

- A one-part asset key that is already a legal W&B name is used unchanged, exactly as upstream does
  (so existing artifacts and ``SourceAsset(key="my_artifact")`` keep their names).
- A multi-part asset key uses the WHOLE path, parts joined with ``-`` (upstream used only the first
  part, so ``a/b`` and ``a/c`` collided). Dagster names are ``[A-Za-z0-9_]``, so ``-`` cannot come
  from inside a valid part.
- Any character W&B does not allow is replaced by ``_``; whenever a name had to be altered in a
  way that could be ambiguous (replaced characters, truncation) a short digest of the original is
  appended so two different keys never share a name.
- A partition key is appended as ``<name>.<partition>``; the parts of a multi-partition key are
  joined with ``-`` (instead of Dagster's ``|``).

The signed context of every version also carries the real asset key and partition key, so even a
name collision could never make a reader accept another asset's data.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

from ..stores.base import ARTIFACT_NAME_RE

MAX_NAME_LENGTH = 128
_ILLEGAL = re.compile(r"[^A-Za-z0-9_.-]")
_DIGEST_CHARS = 8


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]


def _sanitize(text: str) -> tuple[str, bool]:
    cleaned = _ILLEGAL.sub("_", text)
    return cleaned, cleaned != text


def _fit(name: str, original: str, altered: bool) -> str:
    """Append a digest of ``original`` when the name was altered; keep within the length limit."""
    if altered or len(name) > MAX_NAME_LENGTH or name in {"", ".", ".."}:
        suffix = "-h" + _digest(original)
        name = name[: MAX_NAME_LENGTH - len(suffix)] + suffix
    return name


def asset_key_path_string(path: Sequence[str]) -> str:
    """The asset key as Dagster prints it (``a/b``); this is what the signed context binds."""
    return "/".join(path)


def artifact_name_for_asset_key(path: Sequence[str]) -> str:
    """The W&B artifact (collection) name for an asset key path."""
    parts = [str(p) for p in path]
    if not parts:
        raise ValueError("an asset key has at least one part")
    if len(parts) == 1 and ARTIFACT_NAME_RE.fullmatch(parts[0]) and parts[0] not in {".", ".."}:
        return parts[0]
    cleaned = []
    altered = False
    for part in parts:
        c, changed = _sanitize(part)
        # '-' joins the parts and '.' starts a partition suffix: inside a part they are ambiguous
        if len(parts) > 1 and ("-" in part or "." in part):
            changed = True
        cleaned.append(c)
        altered = altered or changed
    return _fit("-".join(cleaned), "\x00".join(parts), altered)


def partition_suffix(partition_key: str | Mapping[str, str]) -> str:
    """The name suffix for a partition key (multi-partition keys joined with ``-``)."""
    if isinstance(partition_key, Mapping):
        raw = "-".join(str(partition_key[k]) for k in sorted(partition_key))
        original = "|".join(f"{k}={partition_key[k]}" for k in sorted(partition_key))
    else:
        raw = str(partition_key).replace("|", "-")
        original = str(partition_key)
    cleaned, altered = _sanitize(raw)
    if altered:
        cleaned = f"{cleaned}-h{_digest(original)}"
    return cleaned


def artifact_name(base: str, partition_key: str | Mapping[str, str] | None = None) -> str:
    """``base`` or ``base.<partition>``, checked to be a legal W&B name."""
    if partition_key is None:
        name = base
    else:
        name = f"{base}.{partition_suffix(partition_key)}"
    if len(name) > MAX_NAME_LENGTH:
        name = _fit(name[:MAX_NAME_LENGTH], name, True)
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
    "partition_suffix",
    "run_alias",
]
