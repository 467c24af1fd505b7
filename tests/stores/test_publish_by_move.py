"""Publish by move (issue 16): the local store publishes a staging area the publisher wrote into
by rename, never copying or re-reading the files, and still refuses every staged file it could
not vouch for (symlink, hard link, stray file, wrong size, a file or folder from elsewhere).
Also: an index written before the digest kind was recorded (schema 1) keeps opening."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from dagster_wandb_secure.core.errors import ConfigurationError, UnsafePathError
from dagster_wandb_secure.stores import local_staging
from dagster_wandb_secure.stores.base import (
    StagedDigest,
    StagingArea,
    StoreError,
    VersionRowError,
    staging_area,
)
from dagster_wandb_secure.stores.local import LocalArtifactStore
from dagster_wandb_secure.stores.local_index import SCHEMA_VERSION

E, P = "team", "proj"
HEX = "ab" * 32


def _publish(store: LocalArtifactStore, area: StagingArea, files: dict[str, Path], **kw: object):
    digests = kw.pop("digests", None)
    if digests is None:
        digests = {
            rel: StagedDigest(os.lstat(p).st_size, "blake3", HEX)
            for rel, p in files.items()
            if not os.path.islink(p)
        }
    return store.publish(
        entity=E, project=P, name="m", type="model", files=files, staged=area,
        digests=digests, **kw,  # type: ignore[arg-type]
    )


def _no_versions(store: LocalArtifactStore) -> None:
    assert list(store.list_versions()) == []
    # no version folder (the artifact's parent folders may exist, as after a copy publish)
    assert [p for p in (store.root / "artifacts").rglob("*") if p.name[:1] == "v" or
            not p.is_dir()] == []


def test_publish_by_move_keeps_the_inode_and_never_reads_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalArtifactStore(tmp_path / "s")

    def no_read(*_a: object, **_k: object) -> None:
        raise AssertionError("a staged file was read or copied by the store")

    monkeypatch.setattr(local_staging, "_hash_fd", no_read)
    monkeypatch.setattr(LocalArtifactStore, "_copy_one", staticmethod(no_read))
    with store.staging_area() as area:
        assert area.by_move and area.path.parent == store.root / "staging"
        (area.path / "sub").mkdir()
        files = {"output.pickle": area.path / "output.pickle", "sub/b": area.path / "sub" / "b"}
        files["output.pickle"].write_bytes(os.urandom(4096))
        files["sub/b"].write_bytes(b"bee")
        inodes = {rel: os.stat(p).st_ino for rel, p in files.items()}
        av = _publish(
            store,
            area,
            files,
            digests={
                "output.pickle": StagedDigest(4096, "envelope_payload_blake3", HEX),
                "sub/b": StagedDigest(3, "sha256", "cd" * 32),
            },
        )
    for rel in files:
        path = store.file_path(av, rel)
        assert os.stat(path).st_ino == inodes[rel]  # the very file the publisher wrote
        assert os.stat(path).st_mode & 0o777 == 0o444
    again = store.resolve(E, P, "m")
    assert again.files["output.pickle"].digest_kind == "envelope_payload_blake3"
    assert again.files["output.pickle"].sha256 == HEX
    assert again.files["sub/b"].digest_kind == "sha256"
    assert list((store.root / "staging").iterdir()) == []


def test_an_area_that_is_not_published_is_removed(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "s")
    with store.staging_area() as area:
        (area.path / "f").write_bytes(b"x")
    assert not area.path.exists()
    _no_versions(store)


def test_a_staged_symlink_is_refused(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "s")
    secret = tmp_path / "secret"
    secret.write_bytes(b"not for the store")
    with store.staging_area() as area:
        link = area.path / "f"
        link.symlink_to(secret)
        with pytest.raises(UnsafePathError, match="symlink"):
            _publish(store, area, {"f": link}, digests={"f": StagedDigest(17, "sha256", HEX)})
    _no_versions(store)
    assert secret.read_bytes() == b"not for the store"


def test_a_staged_folder_symlink_is_refused(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "s")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_bytes(b"x")
    with store.staging_area() as area:
        (area.path / "d").symlink_to(outside, target_is_directory=True)
        with pytest.raises(UnsafePathError):
            _publish(store, area, {"d/f": area.path / "d" / "f"})
    _no_versions(store)


def test_a_staged_hard_link_to_an_outside_file_is_refused(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "s")
    with store.staging_area() as area:
        outside = store.root / "mine"  # same file system as the staging folder
        outside.write_bytes(b"changeable later through this name")
        os.link(outside, area.path / "f")
        with pytest.raises(UnsafePathError, match="hard links"):
            _publish(store, area, {"f": area.path / "f"})
    _no_versions(store)


def test_a_stray_or_special_file_in_the_area_is_refused(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "s")
    with store.staging_area() as area:
        (area.path / "f").write_bytes(b"x")
        (area.path / "planted").write_bytes(b"y")
        with pytest.raises(StoreError, match="planted"):
            _publish(store, area, {"f": area.path / "f"})
    with store.staging_area() as area:
        (area.path / "f").write_bytes(b"x")
        os.mkfifo(area.path / "fifo")
        with pytest.raises(UnsafePathError, match="fifo"):
            _publish(store, area, {"f": area.path / "f"})
    _no_versions(store)


def test_a_source_outside_the_area_is_refused(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "s")
    elsewhere = tmp_path / "f"
    elsewhere.write_bytes(b"x")
    with store.staging_area() as area:
        (area.path / "g").write_bytes(b"x")
        with pytest.raises(UnsafePathError, match="not in the staging folder"):
            _publish(store, area, {"f": elsewhere})
        with pytest.raises(UnsafePathError, match="not in the staging folder"):
            _publish(store, area, {"f": area.path / "g"})  # in the area, under another name
    _no_versions(store)


def test_a_wrong_size_or_malformed_digest_is_refused(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "s")
    with store.staging_area() as area:
        f = area.path / "f"
        f.write_bytes(b"grown after the seal")
        with pytest.raises(UnsafePathError, match="bytes, not the 3"):
            _publish(store, area, {"f": f}, digests={"f": StagedDigest(3, "blake3", HEX)})
        for bad in (StagedDigest(20, "md5", HEX), StagedDigest(20, "sha256", "zz")):
            with pytest.raises(ConfigurationError, match="malformed"):
                _publish(store, area, {"f": f}, digests={"f": bad})
    _no_versions(store)


def test_only_a_live_area_of_this_store_is_accepted(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "s")
    other = LocalArtifactStore(tmp_path / "o")
    forged = store.root / "staging" / "forged"
    forged.mkdir()
    (forged / "f").write_bytes(b"x")
    with pytest.raises(ConfigurationError, match="staging_area"):
        _publish(store, StagingArea(forged, True, store.root), {"f": forged / "f"})
    with other.staging_area() as area:
        (area.path / "f").write_bytes(b"x")
        with pytest.raises(ConfigurationError, match="staging_area"):
            _publish(store, area, {"f": area.path / "f"})
    with store.staging_area() as area:
        (area.path / "f").write_bytes(b"x")
        # someone renames the folder away and puts their own in its place
        os.rename(area.path, tmp_path / "moved")
        area.path.mkdir()
        (area.path / "f").write_bytes(b"x")
        with pytest.raises(UnsafePathError, match="replaced"):
            _publish(store, area, {"f": area.path / "f"})
    _no_versions(store)


def test_the_fallback_area_for_stores_that_cannot_move(tmp_path: Path) -> None:
    class NoMove:
        pass

    with staging_area(NoMove(), tmp_path / "private") as area:
        assert not area.by_move
        assert area.path.parent == tmp_path / "private"
        (area.path / "f").write_bytes(b"x")
    assert not area.path.exists()
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o700


# --- the index format: schema 1 stores keep opening ---------------------------------------------


def _to_schema_1(root: Path) -> None:
    """Rewrite an index as a schema-1 release left it: [size, sha256] pairs, user_version 1."""
    with sqlite3.connect(root / "index.sqlite3") as conn:
        for key, number, files in conn.execute("SELECT artifact_id, number, files FROM versions"):
            doc = {rel: entry[:2] for rel, entry in json.loads(files).items()}
            conn.execute(
                "UPDATE versions SET files = ? WHERE artifact_id = ? AND number = ?",
                (json.dumps(doc), key, number),
            )
        conn.execute("PRAGMA user_version = 1")


def test_a_schema_1_index_opens_and_is_migrated(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = LocalArtifactStore(root)
    src = tmp_path / "a"
    src.write_bytes(b"alpha")
    old = store.publish(entity=E, project=P, name="m", type="model", files={"a": src})
    del store
    _to_schema_1(root)
    store = LocalArtifactStore(root)  # opens and migrates
    with sqlite3.connect(root / "index.sqlite3") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        assert json.loads(conn.execute("SELECT files FROM versions").fetchone()[0])["a"] == [
            5,
            old.files["a"].sha256,
        ]  # rows are not rewritten
    got = store.resolve(E, P, "m", version=0)
    assert got.files["a"].digest_kind == "sha256"
    assert got.files["a"].sha256 == old.files["a"].sha256
    new = store.publish(entity=E, project=P, name="m", type="model", files={"a": src})
    assert new.version == 1 and new.files["a"].digest_kind == "sha256"


def test_a_schema_1_index_with_a_crashed_publish_is_recovered_on_migration(
    tmp_path: Path,
) -> None:
    root = tmp_path / "s"
    LocalArtifactStore(root)
    orphan = root / "artifacts" / E / P / "m" / "v0"
    orphan.mkdir(parents=True)
    (orphan / "f").write_bytes(b"half")
    with sqlite3.connect(root / "index.sqlite3") as conn:
        conn.execute(
            "INSERT INTO pending (entity, project, name, number, started_at) "
            "VALUES (?, ?, ?, 0, '2024-01-01T00:00:00+00:00')",
            (E, P, "m"),
        )
        conn.execute("PRAGMA user_version = 1")
    LocalArtifactStore(root)
    assert not orphan.exists()
    with sqlite3.connect(root / "index.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM pending").fetchone()[0] == 0


@pytest.mark.parametrize(
    "entry", [[5, HEX, "md5"], [5, HEX, ["sha256"]], [5, HEX, "sha256", 1], [5, HEX, None]]
)
def test_a_malformed_digest_kind_in_the_index_is_a_row_error(
    tmp_path: Path, entry: list[object]
) -> None:
    root = tmp_path / "s"
    store = LocalArtifactStore(root)
    src = tmp_path / "a"
    src.write_bytes(b"alpha")
    store.publish(entity=E, project=P, name="m", type="model", files={"a": src})
    with sqlite3.connect(root / "index.sqlite3") as conn:
        conn.execute("UPDATE versions SET files = ?", (json.dumps({"a": entry}),))
    with pytest.raises(VersionRowError, match="not \\[size, digest, kind\\]"):
        store.resolve(E, P, "m")


# --- crash safety of a publish by move ---------------------------------------------------------

_CHILD = r"""
import os, sys, time
from pathlib import Path
from dagster_wandb_secure.stores.base import StagedDigest
from dagster_wandb_secure.stores.local import LocalArtifactStore

root, point = sys.argv[1], sys.argv[2]
orig_rename = os.rename
def rename(a, b, *r, **k):
    if point == "before-rename" and "/staging/" in str(a) and "/artifacts/" in str(b):
        sys.stdout.write("R\n"); sys.stdout.flush(); time.sleep(120)
    return orig_rename(a, b, *r, **k)
os.rename = rename
orig_check = LocalArtifactStore._check_staged
def check(*a, **k):
    if point == "while-checking":
        sys.stdout.write("R\n"); sys.stdout.flush(); time.sleep(120)
    return orig_check(*a, **k)
LocalArtifactStore._check_staged = staticmethod(check)
store = LocalArtifactStore(root)
with store.staging_area() as area:
    f = area.path / "f"
    f.write_bytes(b"x" * 1000)
    store.publish(entity="team", project="proj", name="m", type="model", files={"f": f},
                  staged=area, digests={"f": StagedDigest(1000, "blake3", "ab" * 32)})
sys.stdout.write("D\n"); sys.stdout.flush()
"""


@pytest.mark.parametrize("point", ["while-checking", "before-rename"])
def test_sigkill_during_a_publish_by_move_leaves_nothing_visible(
    tmp_path: Path, point: str
) -> None:
    root = tmp_path / "s"
    LocalArtifactStore(root)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(root), point], stdout=subprocess.PIPE, text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "R"
    finally:
        proc.kill()  # SIGKILL
        proc.wait(timeout=30)
    assert len(list((root / "staging").iterdir())) == 1  # the dead publisher's area
    store = LocalArtifactStore(root, staging_max_age=0)
    _no_versions(store)
    src = tmp_path / "a"
    src.write_bytes(b"a")
    av = store.publish(entity=E, project=P, name="m", type="model", files={"a": src})
    assert av.version == 0
    assert list((root / "staging").iterdir()) == []  # the stale area was cleaned up
