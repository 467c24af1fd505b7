"""One file of a W&B artifact version fetched alone (``Artifact.get_entry(...).download``), never
the version's other files: what the writer's head scan reads of every version (its manifest).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import ResourceLimitError, SecureArtifactError
from ..core.fsutil import safe_relpath
from .base import ArtifactNotFoundError, StoreError, read_capped
from .local_files import open_in_version
from .wandb_run import attr_obj

__all__ = ["fetch_entry"]


def fetch_entry(
    artifact: Any,
    relpath: str,
    *,
    scratch: Path,
    max_bytes: int,
    where: str,
    errors: tuple[type[BaseException], ...],
    scrub: Callable[[object], str],
) -> bytes:
    """The bytes of the file ``relpath`` of the W&B version ``artifact`` (at most
    ``max_bytes``; more, as W&B announces it or as read, is a ResourceLimitError).

    Only that entry is downloaded, into a fresh private folder below ``scratch`` that is
    removed afterwards; the file is opened there with ``open_in_version``'s checks (no symlink,
    a regular file) whatever path wandb reports. ``errors`` are the SDK's exception types that
    become a StoreError (their text passed through ``scrub``). Nothing read is trusted."""
    rel = safe_relpath(relpath)
    try:
        entry = artifact.get_entry(rel)
    except KeyError as exc:
        raise ArtifactNotFoundError(f"the W&B version has no file {rel!r}", artifact=where) from exc
    except (*errors, ValueError) as exc:
        raise StoreError(
            f"W&B could not describe {rel!r}: {scrub(exc)}",
            artifact=where,
            hint="check network access and the W&B server status",
        ) from exc
    size = attr_obj(entry, "size")
    if isinstance(size, int) and size > max_bytes:
        raise ResourceLimitError(
            f"{rel!r} is {size} bytes by W&B's record, over the cap of {max_bytes}; not fetched",
            artifact=where,
        )
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = Path(tempfile.mkdtemp(prefix="entry-", dir=scratch))
    try:
        try:
            entry.download(root=str(folder))
        except (*errors, ValueError, OSError) as exc:
            raise StoreError(
                f"downloading {rel!r} from W&B failed: {scrub(exc)}",
                artifact=where,
                hint="check network access, disk space and the W&B server status",
            ) from exc
        fd, _ = open_in_version(folder, rel, where)
        with os.fdopen(fd, "rb") as fh:
            return read_capped(fh, max_bytes, rel, where)
    except SecureArtifactError:
        raise
    except OSError as exc:
        raise StoreError(f"cannot read {rel!r}: {exc.strerror or exc}", artifact=where) from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)
