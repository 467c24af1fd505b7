"""Which signed asset key a reader accepts: its own, or (for a source it cannot know was written
by Dagster) a version signed with no asset key at all, never another asset's key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from ..core.errors import ContextMismatchError
from .target import Target

T = TypeVar("T")


def read_bound(attempt: Callable[[Target], T], target: Target, *, strict: bool) -> T:
    """Run ``attempt`` (a verified read that binds ``target.asset_key``) for ``target``.

    ``strict``: the signed context must carry exactly ``target.asset_key``. Otherwise (a
    ``SourceAsset``, or an upstream asset the run's graph does not produce) a version whose
    signed context has no asset key (or a null one: an op output, an adopted artifact) is also
    accepted: the read is retried with the asset key stated as absent, which still refuses any
    other key. If both fail, the first refusal (signed for another asset key) is raised."""
    try:
        return attempt(target)
    except ContextMismatchError as first:
        if strict or target.asset_key is None:
            raise
        try:
            return attempt(replace(target, asset_key=None))
        except ContextMismatchError:
            raise first from None


__all__ = ["read_bound"]
