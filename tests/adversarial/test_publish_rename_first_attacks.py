"""Red team of the local publish by move that renames first (session 5, merge e211ba8): the
staged folder is renamed to ``v<N>`` under the store lock, after its ``pending`` row, then the
files, folders and ledger barrier are flushed, then the index commit makes the version visible.

Attacks here: a reader in another process looking while the folder is in ``artifacts/`` but not
committed; the store's ``publish.lock`` deleted by whoever can write the store (a cleanup tool,
an attacker) while a publisher holds it, so a second publisher runs at the same time (its
recovery must not take a live publisher's folder, and a failed publish must take back out only
its own folder, never another's committed version); and the target name planted, before the
publish or in the window just before the rename (empty folder, full folder, symlinks, a file,
a FIFO): the publish either publishes its own files or fails with a typed error, and nothing
outside the store is touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dagster_wandb_secure.core.errors import SecureArtifactError, UnsafePathError
from dagster_wandb_secure.stores.base import StagedDigest, StoreError
from dagster_wandb_secure.stores.local import LocalArtifactStore

ART = ("e", "p", "m")


def _publish(
    store: LocalArtifactStore, content: bytes, barrier: Callable[[], None] | None = None
) -> Any:
    with store.staging_area() as area:
        (area.path / "x.bin").write_bytes(content)
        return store.publish(
            entity="e", project="p", name="m", type="t", files={"x.bin": area.path / "x.bin"},
            staged=area, digests={"x.bin": StagedDigest(len(content), "blake3", "ab" * 32)},
            barrier=barrier,
        )


def _every_indexed_version_reads(root: Path) -> dict[int, bytes]:
    """Every version the index lists opens and reads (no indexed version without its folder)."""
    store = LocalArtifactStore(root)
    out = {}
    for av in store.list_versions():
        with store.open_file(av, "x.bin") as fh:
            out[av.version] = fh.read()
    return out


def _unindexed_folders(root: Path) -> list[str]:
    folder = root / "artifacts" / Path(*ART)
    indexed = {f"v{av.version}" for av in LocalArtifactStore(root).list_versions()}
    return sorted(p.name for p in folder.iterdir() if p.name not in indexed)


# --- a reader in another process between the rename and the commit ---------------------------

_READER = r"""
import json, sys
from dagster_wandb_secure.stores.local import LocalArtifactStore
from dagster_wandb_secure.stores.base import list_manifests
from dagster_wandb_secure.maintenance.audit import collect_folder
store = LocalArtifactStore(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
out = {"versions": [av.version for av in store.list_versions()],
       "latest": store.resolve("e", "p", "m").version,
       "manifests": [av.version for av, _ in list_manifests(store, entity="e", project="p",
                     name="m", relpath="x.bin", max_bytes=100)]}
try:
    store.resolve("e", "p", "m", version=1)
    out["v1"] = "found"
except Exception as exc:
    out["v1"] = type(exc).__name__
print(json.dumps(out), flush=True)
"""


def test_a_reader_in_another_process_sees_nothing_of_a_renamed_uncommitted_version(
    tmp_path: Path,
) -> None:
    root = tmp_path / "s"
    store = LocalArtifactStore(root)
    _publish(store, b"v0")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(root)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, env=env,
    )
    assert reader.stdout is not None and reader.stdin is not None
    assert reader.stdout.readline().strip() == "ready"
    seen: dict[str, Any] = {}

    def barrier() -> None:  # the folder is in artifacts/ now, durable or not, not committed
        assert (root / "artifacts" / "e" / "p" / "m" / "v1" / "x.bin").is_file()
        reader.stdin.write("go\n")  # type: ignore[union-attr]
        reader.stdin.flush()  # type: ignore[union-attr]
        seen.update(json.loads(reader.stdout.readline()))  # type: ignore[union-attr]

    assert _publish(store, b"v1!", barrier).version == 1
    reader.wait(timeout=60)
    assert seen == {"versions": [0], "latest": 0, "manifests": [0], "v1": "ArtifactNotFoundError"}


def test_opening_the_store_does_not_wait_for_a_publisher_flushing_under_the_lock(
    tmp_path: Path,
) -> None:
    """The flush round (every staged file's fsync, the ledger barrier) now runs under the
    store lock, after the ``pending`` row: a process opening the store then meets that row.
    Recovery is a publisher's job (each one recovers under the lock before it allocates), so
    opening must not wait for the lock. Was: every reader starting during a publish waited for
    the payload's fsync, and failed with a lock timeout behind a slow one."""
    root = tmp_path / "s"
    store = LocalArtifactStore(root)
    _publish(store, b"v0")
    seen: dict[str, Any] = {}

    def reader() -> None:
        try:
            opened = LocalArtifactStore(root, lock_timeout=2)
            seen["versions"] = [av.version for av in opened.list_versions()]
        except BaseException as exc:  # noqa: BLE001 - reported below
            seen["error"] = exc

    def barrier() -> None:  # the publisher holds the store lock, its pending row committed
        t = threading.Thread(target=reader)
        t.start()
        t.join(30)

    assert _publish(store, b"v1!", barrier).version == 1
    assert seen == {"versions": [0]}


# --- publish.lock deleted while a publisher holds it -----------------------------------------


def test_a_second_publisher_never_takes_a_live_publishers_renamed_folder(tmp_path: Path) -> None:
    """Publisher 1 renamed its folder to v1 and is flushing; the lock file is deleted, so
    publisher 2 gets a lock of its own. Its recovery must not treat publisher 1's pending row
    as a dead one (removing the live folder), and no committed version may end up without its
    folder. Was: publisher 2 removed v1 and published its own v1, then publisher 1's failed
    commit removed publisher 2's committed v1: an indexed version with no folder."""
    root = tmp_path / "s"
    s1 = LocalArtifactStore(root)
    _publish(s1, b"v0")
    flushing, go = threading.Event(), threading.Event()

    def barrier() -> None:
        flushing.set()
        assert go.wait(30)

    got: dict[str, Any] = {}

    def first() -> None:
        try:
            got["p1"] = _publish(s1, b"first", barrier)
        except BaseException as exc:  # noqa: BLE001 - reported below
            got["p1"] = exc

    t = threading.Thread(target=first)
    t.start()
    assert flushing.wait(30)
    os.unlink(root / "publish.lock")  # whoever can write the store
    try:
        got["p2"] = _publish(LocalArtifactStore(root), b"second")
    except SecureArtifactError as exc:
        got["p2"] = exc
    finally:
        go.set()
        t.join(30)
    assert not isinstance(got["p1"], BaseException), got["p1"]
    assert got["p1"].version == 1
    reads = _every_indexed_version_reads(root)
    assert reads[1] == b"first"
    if isinstance(got["p2"], BaseException):
        assert isinstance(got["p2"], StoreError)
        assert reads == {0: b"v0", 1: b"first"}
    else:
        assert reads[got["p2"].version] == b"second"


def test_a_failed_publish_takes_back_out_only_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Publisher 1 holds the lock and is about to rename into v1; the lock file is deleted and
    publisher 2 publishes v1 completely. Publisher 1's rename then fails (v1 is not empty):
    its failure path must leave publisher 2's committed v1 alone. Was: it removed it."""
    root = tmp_path / "s"
    s1 = LocalArtifactStore(root)
    _publish(s1, b"v0")
    about, go = threading.Event(), threading.Event()
    real_rename = os.rename
    first_thread: list[int] = []

    def rename(a: Any, b: Any, *args: Any, **kw: Any) -> None:
        if threading.get_ident() in first_thread and str(b).endswith("/m/v1"):
            about.set()
            assert go.wait(30)
        real_rename(a, b, *args, **kw)

    monkeypatch.setattr(os, "rename", rename)
    got: dict[str, Any] = {}

    def first() -> None:
        first_thread.append(threading.get_ident())
        try:
            got["p1"] = _publish(s1, b"first")
        except BaseException as exc:  # noqa: BLE001 - reported below
            got["p1"] = exc

    t = threading.Thread(target=first)
    t.start()
    assert about.wait(30)
    os.unlink(root / "publish.lock")
    try:
        got["p2"] = _publish(LocalArtifactStore(root), b"second")
    finally:
        go.set()
        t.join(30)
    assert got["p2"].version == 1
    assert isinstance(got["p1"], StoreError), got["p1"]
    assert _every_indexed_version_reads(root) == {0: b"v0", 1: b"second"}


# --- the target name planted -------------------------------------------------------------------


def _plant(kind: str, target: Path, outside: Path) -> None:
    if kind == "empty dir":
        target.mkdir()
    elif kind == "full dir":
        target.mkdir()
        (target / "x.bin").write_bytes(b"planted")
    elif kind == "symlink to a folder outside":
        target.symlink_to(outside, target_is_directory=True)
    elif kind == "symlink to a file outside":
        target.symlink_to(outside / "keep.txt")
    elif kind == "dangling symlink":
        target.symlink_to(outside / "nothing")
    elif kind == "file":
        target.write_bytes(b"planted")
    elif kind == "fifo":
        os.mkfifo(target)
    else:  # pragma: no cover
        raise AssertionError(kind)


KINDS = ["empty dir", "full dir", "symlink to a folder outside", "symlink to a file outside",
         "dangling symlink", "file", "fifo"]


def _outside(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_bytes(b"keep")
    return outside, {"keep.txt": b"keep"}


def _unchanged(outside: Path, before: dict[str, bytes]) -> None:
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before


@pytest.mark.parametrize("kind", KINDS)
def test_a_target_planted_before_the_publish_is_removed_or_refused(
    tmp_path: Path, kind: str
) -> None:
    root = tmp_path / "s"
    store = LocalArtifactStore(root)
    _publish(store, b"v0")
    outside, before = _outside(tmp_path)
    _plant(kind, root / "artifacts" / "e" / "p" / "m" / "v1", outside)
    try:
        av = _publish(store, b"mine")
    except SecureArtifactError as exc:
        assert isinstance(exc, StoreError | UnsafePathError), exc  # typed, named
    else:
        assert av.version == 1
        assert _every_indexed_version_reads(root) == {0: b"v0", 1: b"mine"}
    _unchanged(outside, before)


@pytest.mark.parametrize("kind", KINDS)
def test_a_target_planted_just_before_the_rename_is_replaced_or_refused(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted after the orphan check, in the window before the rename (the attacker does not
    take the store lock): the rename replaces an empty folder (Linux), fails onto anything
    else; either way a typed error or our own files, nothing outside touched, and the next
    publish works."""
    root = tmp_path / "s"
    store = LocalArtifactStore(root)
    _publish(store, b"v0")
    outside, before = _outside(tmp_path)
    real_rename = os.rename
    planted: list[str] = []

    def rename(a: Any, b: Any, *args: Any, **kw: Any) -> None:
        if str(b).endswith("/m/v1") and not planted:
            planted.append(kind)
            _plant(kind, Path(b), outside)
        real_rename(a, b, *args, **kw)

    monkeypatch.setattr(os, "rename", rename)
    try:
        av = _publish(store, b"mine")
    except SecureArtifactError as exc:
        assert isinstance(exc, StoreError), exc
        assert kind != "empty dir"
        assert _every_indexed_version_reads(root) == {0: b"v0"}
    else:
        assert av.version == 1 and kind == "empty dir"
        assert _every_indexed_version_reads(root) == {0: b"v0", 1: b"mine"}
    assert planted == [kind]
    _unchanged(outside, before)
    monkeypatch.setattr(os, "rename", real_rename)
    if "symlink" in kind:  # left where the attacker put it (not ours to remove): named, refused
        with pytest.raises(UnsafePathError, match="outside the store"):
            _publish(store, b"next")
        os.unlink(root / "artifacts" / "e" / "p" / "m" / "v1")
    av = _publish(store, b"next")  # a planted name left otherwise is removed as an orphan
    assert _every_indexed_version_reads(root)[av.version] == b"next"
    assert _unindexed_folders(root) == []
    _unchanged(outside, before)
