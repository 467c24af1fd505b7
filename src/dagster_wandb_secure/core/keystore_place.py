"""Where a key store may live and who must own it, checked whenever a key store is opened.

A key store is a trust anchor: only its owner may be able to change it. So its folder must not be
writable by group or others, must be owned by the current user (root may open any, with a
``ForeignOwnerWarning``), and must be neither inside an artifact store folder nor contain one:
everything in an artifact store is attacker-controlled (SECURITY.md), and a registry writer who
can write there could plant or replace keys. An artifact store folder is recognised by its index
file (``STORE_STORE_INDEX_NAME``, defined here because the core may not import the stores; the
local store's index takes its name from it).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import KeyStoreError
from .fsutil import check_owner
from .keyfiles import check_not_writable_by_others

# The file at the root of every local artifact store (and W&B offline mirror).
STORE_INDEX_NAME = "index.sqlite3"

__all__ = ["MAX_SCAN_DEPTH", "MAX_SCAN_ENTRIES", "check_key_store_place", "find_artifact_store"]

# How deep below a key store folder an artifact store is looked for, and how many folders at most
# (a key store holds a handful; the bound keeps opening a mistaken huge folder cheap).
MAX_SCAN_DEPTH = 3
MAX_SCAN_ENTRIES = 2000


def find_artifact_store(path: Path) -> Path | None:
    """The artifact store folder ``path`` lies in or contains (bounded scan), or None."""
    for folder in (path, *path.parents):
        if (folder / STORE_INDEX_NAME).exists():
            return folder
    seen = 0
    frontier = [path]
    for _ in range(MAX_SCAN_DEPTH):
        below: list[Path] = []
        for folder in frontier:
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                seen += 1
                if seen > MAX_SCAN_ENTRIES:
                    return None
                if entry.is_dir(follow_symlinks=False):
                    child = Path(entry.path)
                    if (child / STORE_INDEX_NAME).exists():
                        return child
                    below.append(child)
        frontier = below
    return None


def check_key_store_place(path: Path, *, exists: bool = True) -> None:
    """``KeyPermissionError`` / ``KeyStoreError`` unless the folder ``path`` may be a key store
    (``exists=False``: a folder about to be created; only its place is checked)."""
    if exists:
        check_not_writable_by_others(path)
        check_owner(path, what="key store folder")
    store = find_artifact_store(path)
    if store is not None:
        where = "lies inside" if store == path or store in path.parents else "contains"
        raise KeyStoreError(
            f"the key store {path} {where} the artifact store folder {store}: anyone who "
            "can write to the artifact store could plant or replace trusted keys",
            hint="keep the key store outside every artifact store folder, e.g. "
            "`dagster-wandb-secure keys init -k ~/.dagster-wandb-secure/keys`",
        )
