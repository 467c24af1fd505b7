"""LocalArtifactStore: W&B semantics, path safety, concurrency and crash safety, on real files,
real SQLite and real processes."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import selectors
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dagster_wandb_secure.core.errors import ConfigurationError, UnsafePathError
from dagster_wandb_secure.stores.base import ArtifactNotFoundError, StoreError
from dagster_wandb_secure.stores.local import DiskEntry, LocalArtifactStore

E, P = "team", "proj"


def _src(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _publish(
    store: LocalArtifactStore, tmp_path: Path, name: str = "model", data: bytes = b"x", **kw: object
):
    src = _src(tmp_path, f"{name}-{time.time_ns()}", data)
    kw.setdefault("type", "model")
    return store.publish(entity=E, project=P, name=name, files={"model.bin": src}, **kw)


def _assert_complete(store: LocalArtifactStore) -> int:
    """Every indexed version has exactly its recorded files on disk, with their digests."""
    count = 0
    for av in store.list_versions():
        on_disk = store.list_files(av)
        assert [(e.path, e.kind, e.size) for e in on_disk] == [
            (f.path, "file", f.size) for f in av.files.values()
        ], av.qualified_name
        for entry in av.files.values():
            with store.open_file(av, entry.path) as fh:
                assert hashlib.sha256(fh.read()).hexdigest() == entry.sha256
        count += 1
    return count


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "store")


# --- semantics ---------------------------------------------------------------------------------


def test_publish_and_resolve_round_trip(store: LocalArtifactStore, tmp_path: Path) -> None:
    a = _src(tmp_path, "a", b"alpha")
    b = _src(tmp_path, "b", os.urandom(3 * 1024 * 1024 + 7))  # several copy chunks
    av = store.publish(
        entity=E,
        project=P,
        name="ds",
        type="dataset",
        files={"data/a.txt": a, "b.bin": b},
        description="first",
        metadata={"rows": 3, "x": [1]},
        aliases=["prod"],
        run_id="run-1",
    )
    assert av.qualified_name == f"{E}/{P}/ds:v0"
    assert av.root == store.root / "artifacts" / E / P / "ds" / "v0"
    assert av.aliases == ("latest", "prod")
    assert av.files["b.bin"].sha256 == hashlib.sha256(b.read_bytes()).hexdigest()
    assert av.files["b.bin"].size == b.stat().st_size
    assert list(av.files) == ["b.bin", "data/a.txt"]
    got = store.resolve(E, P, "ds")
    assert got == av
    with store.open_file(got, "data/a.txt") as fh:
        assert fh.read() == b"alpha"
    assert store.file_path(got, "b.bin").read_bytes() == b.read_bytes()
    # stored files are read-only, and the store is readable by a fresh instance
    assert not stat.S_IMODE((av.root / "b.bin").stat().st_mode) & 0o222
    again = LocalArtifactStore(store.root)
    assert again.resolve(E, P, "ds", version="v0") == av
    assert (store.root / "index.sqlite3").is_file()
    with sqlite3.connect(store.root / "index.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_versions_number_per_artifact_and_aliases_move(
    store: LocalArtifactStore, tmp_path: Path
) -> None:
    v0 = _publish(store, tmp_path, aliases=["prod"])
    v1 = _publish(store, tmp_path, data=b"y")
    other = _publish(store, tmp_path, name="other")
    v2 = _publish(store, tmp_path, data=b"z", aliases=["prod", "prod"])
    assert (v0.version, v1.version, v2.version, other.version) == (0, 1, 2, 0)
    assert store.resolve(E, P, "model").version == 2
    assert store.resolve(E, P, "model", alias="prod").version == 2
    assert store.resolve(E, P, "model", version=1).version == 1
    assert store.resolve(E, P, "model", version="v0").aliases == ()
    assert store.aliases(E, P, "model") == {"latest": 2, "prod": 2}
    # versions are immutable: older folders are untouched
    with store.open_file(v0, "model.bin") as fh:
        assert fh.read() == b"x"


def test_move_alias_including_latest(store: LocalArtifactStore, tmp_path: Path) -> None:
    for i in range(3):
        _publish(store, tmp_path, data=bytes([i]))
    moved = store.move_alias(E, P, "model", "prod", "v1")
    assert moved.version == 1 and "prod" in moved.aliases
    store.move_alias(E, P, "model", "latest", 0)  # what a rollback attacker does
    assert store.resolve(E, P, "model").version == 0
    with pytest.raises(ArtifactNotFoundError, match="v9"):
        store.move_alias(E, P, "model", "prod", 9)
    with pytest.raises(ConfigurationError):
        store.move_alias(E, P, "model", "v2", 1)
    with pytest.raises(ArtifactNotFoundError, match=f"{E}/{P}/ghost"):
        store.move_alias(E, P, "ghost", "prod", 0)
    with pytest.raises(ArtifactNotFoundError):
        store.aliases(E, P, "ghost")
    # the next publish takes the next number and moves latest forward again
    assert _publish(store, tmp_path).version == 3
    assert store.resolve(E, P, "model").version == 3


def test_resolve_errors_name_what_is_missing(store: LocalArtifactStore, tmp_path: Path) -> None:
    for _ in range(25):
        _publish(store, tmp_path)
    store.move_alias(E, P, "model", "prod", 3)
    with pytest.raises(ConfigurationError, match="give one of them"):
        store.resolve(E, P, "model", version=1, alias="prod")
    with pytest.raises(ArtifactNotFoundError) as info:
        store.resolve(E, P, "model", version=99)
    msg = str(info.value)
    assert f"{E}/{P}/model:v99" in msg and "v24" in msg and "25 versions" in msg
    assert "v0," not in msg  # the list is capped
    assert "prod->v3" in msg
    with pytest.raises(ArtifactNotFoundError, match=f"{E}/{P}/model:staging") as info:
        store.resolve(E, P, "model", alias="staging")
    assert "latest->v24" in str(info.value)
    with pytest.raises(ArtifactNotFoundError, match=f"{E}/{P}/nope:latest.*model"):
        store.resolve(E, P, "nope")
    for bad in (-1, "v-1", "x3", "v", True, "v1e3", "٣"):
        with pytest.raises(ConfigurationError):
            store.resolve(E, P, "model", version=bad)  # type: ignore[arg-type]


def test_type_of_a_name_cannot_change(store: LocalArtifactStore, tmp_path: Path) -> None:
    _publish(store, tmp_path, type="dataset")
    with pytest.raises(StoreError) as info:
        _publish(store, tmp_path, type="model")
    assert "'dataset'" in str(info.value) and "'model'" in str(info.value)
    assert [v.version for v in store.list_versions()] == [0]
    assert list((store.root / "staging").iterdir()) == []


@pytest.mark.parametrize(
    "field,value",
    [
        ("entity", "a/b"),
        ("entity", ".."),
        ("project", ""),
        ("project", "p q"),
        ("name", "../x"),
        ("name", "a:b"),
        ("name", "x" * 129),
        ("type", "a/b"),
        ("type", ""),
    ],
)
def test_invalid_names_are_refused(
    store: LocalArtifactStore, tmp_path: Path, field: str, value: str
) -> None:
    kw = {"entity": E, "project": P, "name": "ok", "type": "model"}
    kw[field] = value
    with pytest.raises(ConfigurationError):
        store.publish(files={"f": _src(tmp_path, "f", b"1")}, **kw)
    assert list(store.list_versions()) == []


@pytest.mark.parametrize("aliases", [["v3"], ["a b"], ["x/y"], "prod", [""]])
def test_invalid_aliases_are_refused(
    store: LocalArtifactStore, tmp_path: Path, aliases: object
) -> None:
    with pytest.raises(ConfigurationError):
        _publish(store, tmp_path, aliases=aliases)
    assert list(store.list_versions()) == []


def test_bad_publish_inputs(store: LocalArtifactStore, tmp_path: Path) -> None:
    f = _src(tmp_path, "f", b"1")
    kw = {"entity": E, "project": P, "name": "m", "type": "model"}
    with pytest.raises(StoreError, match="at least one file"):
        store.publish(files={}, **kw)
    with pytest.raises(StoreError, match="both a file and the folder"):
        store.publish(files={"a": f, "a/b": f}, **kw)
    with pytest.raises(StoreError, match="given twice"):
        store.publish(files={"a": f, b"a": f}, **kw)  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match="JSON"):
        store.publish(files={"a": f}, metadata={"x": object()}, **kw)
    with pytest.raises(ConfigurationError, match="JSON"):
        store.publish(files={"a": f}, metadata={"x": float("nan")}, **kw)
    with pytest.raises(StoreError, match="does-not-exist") as info:
        store.publish(files={"a": tmp_path / "does-not-exist"}, **kw)
    assert f"{E}/{P}/m" in str(info.value)
    with pytest.raises(UnsafePathError, match="not a regular file"):
        store.publish(files={"a": tmp_path}, **kw)
    with pytest.raises(StoreError, match="missing-second"):  # fails after one file was copied
        store.publish(files={"a": f, "b": tmp_path / "missing-second"}, **kw)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UnsafePathError, match="not a regular file"):
        store.publish(files={"a": fifo}, **kw)  # refused without blocking on the FIFO
    assert list(store.list_versions()) == []
    assert list((store.root / "staging").iterdir()) == []


@pytest.mark.parametrize(
    "relpath",
    [
        "../x",
        "/abs",
        "a//b",
        "a/../../b",
        "a/./b",
        "a/",
        "",
        "nul\x00byte",
        "a\\b",
        "tab\tname",
        b"\xff\xfe",
        "x/" * 40 + "y",
    ],
)
def test_unsafe_file_names_are_refused_at_publish(
    store: LocalArtifactStore, tmp_path: Path, relpath: str | bytes
) -> None:
    with pytest.raises(UnsafePathError) as info:
        store.publish(
            entity=E, project=P, name="m", type="model", files={relpath: _src(tmp_path, "f", b"1")}
        )  # type: ignore[dict-item]
    assert f"{E}/{P}/m" in str(info.value)
    assert list(store.list_versions()) == []
    assert not (tmp_path / "x").exists() and not (store.root / "x").exists()


def test_symlinked_source_file_is_refused(store: LocalArtifactStore, tmp_path: Path) -> None:
    secret = _src(tmp_path, "secret", b"top secret")
    link = tmp_path / "link"
    link.symlink_to(secret)
    with pytest.raises(UnsafePathError, match="symlink") as info:
        store.publish(entity=E, project=P, name="m", type="model", files={"a": link})
    assert f"{E}/{P}/m" in str(info.value)
    assert list(store.list_versions()) == []
    assert list((store.root / "staging").iterdir()) == []


def test_publish_dir(store: LocalArtifactStore, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"a")
    (folder / "sub" / "b.txt").write_bytes(b"b")
    av = store.publish_dir(folder, entity=E, project=P, name="dir", type="dataset")
    assert sorted(av.files) == ["a.txt", "sub/b.txt"]
    (folder / "sub" / "evil").symlink_to("/etc/passwd")
    with pytest.raises(UnsafePathError, match="symlink"):
        store.publish_dir(folder, entity=E, project=P, name="dir", type="dataset")


# --- reading safely from a tampered store ------------------------------------------------------


def test_open_file_refuses_unsafe_names(store: LocalArtifactStore, tmp_path: Path) -> None:
    av = _publish(store, tmp_path)
    for bad in [
        "../v0/model.bin",
        "../../../../index.sqlite3",
        "/etc/passwd",
        "a//b",
        "x\x00",
        ".",
    ]:
        with pytest.raises(UnsafePathError) as info:
            store.open_file(av, bad)
        assert av.qualified_name in str(info.value)
        with pytest.raises(UnsafePathError):
            store.file_path(av, bad)
    with pytest.raises(ArtifactNotFoundError, match="missing.bin"):
        store.open_file(av, "missing.bin")


def test_planted_symlinks_and_files_are_refused_and_listed(
    store: LocalArtifactStore, tmp_path: Path
) -> None:
    av = _publish(store, tmp_path)
    outside = _src(tmp_path, "outside", b"attacker bytes")
    (tmp_path / "outside-dir").mkdir()
    (tmp_path / "outside-dir" / "f").write_bytes(b"attacker")
    root = av.root
    (root / "escape").symlink_to(outside)
    (root / "inside-link").symlink_to(root / "model.bin")  # even pointing inside: refused
    (root / "dirlink").symlink_to(tmp_path / "outside-dir")
    (root / "extra.pkl").write_bytes(b"planted")
    os.mkfifo(root / "pipe")
    for rel in ["escape", "inside-link", "dirlink/f"]:
        with pytest.raises(UnsafePathError, match="symlink") as info:
            store.open_file(av, rel)
        assert av.qualified_name in str(info.value)
        with pytest.raises(UnsafePathError):
            store.file_path(av, rel)
    with pytest.raises(UnsafePathError, match="not a regular file"):
        store.open_file(av, "pipe")  # must not block on the FIFO
    listed = {e.path: e for e in store.list_files(av)}
    assert listed["escape"] == DiskEntry("escape", "symlink", listed["escape"].size, str(outside))
    assert listed["inside-link"].kind == "symlink"
    assert listed["dirlink"].kind == "symlink"
    assert "dirlink/f" not in listed  # nothing is followed
    assert listed["extra.pkl"] == DiskEntry("extra.pkl", "file", 7)
    assert listed["pipe"].kind == "other"
    assert listed["model.bin"].kind == "file"
    # a planted file whose name is not UTF-8 shows up (escaped) and cannot be opened by that name
    os.close(os.open(os.fsencode(str(root)) + b"/\xff.pkl", os.O_CREAT | os.O_WRONLY))
    odd = [e for e in store.list_files(av) if e.path.endswith(".pkl") and e.path != "extra.pkl"]
    assert len(odd) == 1 and odd[0].kind == "file"
    with pytest.raises(UnsafePathError):
        store.open_file(av, odd[0].path)


def test_symlinked_subfolder_and_version_folder_are_refused(
    store: LocalArtifactStore, tmp_path: Path
) -> None:
    src = _src(tmp_path, "f", b"1")
    av = store.publish(entity=E, project=P, name="m", type="model", files={"sub/f": src})
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "f").write_bytes(b"evil")
    (av.root / "sub" / "f").chmod(0o644)
    os.rename(av.root / "sub", tmp_path / "moved-away")
    (av.root / "sub").symlink_to(evil)
    with pytest.raises(UnsafePathError):
        store.open_file(av, "sub/f")
    # the whole version folder replaced by a symlink
    os.rename(av.root, tmp_path / "v0-away")
    av.root.symlink_to(evil)
    with pytest.raises(UnsafePathError):
        store.open_file(av, "f")
    with pytest.raises(UnsafePathError):
        store.list_files(av)


def test_open_file_uses_the_store_layout_not_av_root(
    store: LocalArtifactStore, tmp_path: Path
) -> None:
    import dataclasses

    av = _publish(store, tmp_path)
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "model.bin").write_bytes(b"evil")
    forged = dataclasses.replace(av, root=evil)
    with store.open_file(forged, "model.bin") as fh:
        assert fh.read() == b"x"


def test_missing_version_folder_is_a_typed_error(store: LocalArtifactStore, tmp_path: Path) -> None:
    av = _publish(store, tmp_path)
    os.rename(av.root, tmp_path / "gone")
    with pytest.raises(StoreError, match="cannot be opened"):
        store.open_file(av, "model.bin")
    with pytest.raises(StoreError, match="cannot be opened"):
        store.list_files(av)


# --- listing and lineage -----------------------------------------------------------------------


def test_list_versions_filters(store: LocalArtifactStore, tmp_path: Path) -> None:
    _publish(store, tmp_path, name="a")
    _publish(store, tmp_path, name="a")
    _publish(store, tmp_path, name="b")
    store.publish(
        entity="other", project=P, name="a", type="model", files={"f": _src(tmp_path, "f", b"1")}
    )
    assert len(list(store.list_versions())) == 4
    assert [v.qualified_name for v in store.list_versions(entity=E, name="a")] == [
        f"{E}/{P}/a:v0",
        f"{E}/{P}/a:v1",
    ]
    assert {v.entity for v in store.list_versions(name="a")} == {"other", E}
    assert list(store.list_versions(project="none")) == []
    with pytest.raises(ConfigurationError):
        list(store.list_versions(name="../x"))


def test_list_ten_thousand_versions_is_fast(store: LocalArtifactStore, tmp_path: Path) -> None:
    av = _publish(store, tmp_path, metadata={"k": "v"}, run_id="r")
    # Bulk-load 10,000 index rows directly (publishing them one by one would only test fsync);
    # none of them has a folder, which also proves the listing does not touch the disk.
    with sqlite3.connect(store.root / "index.sqlite3") as conn:
        row = conn.execute("SELECT artifact_id, metadata, files FROM versions").fetchone()
        conn.executemany(
            "INSERT INTO versions (artifact_id, number, description, metadata, created_at, "
            "created_by_run, files) VALUES (?, ?, NULL, ?, ?, 'r', ?)",
            [(row[0], n, row[1], av.created_at.isoformat(), row[2]) for n in range(1, 10_000)],
        )
        conn.execute("UPDATE aliases SET number = 9999 WHERE alias = 'latest'")
    # An algorithmic property, not seconds: the listing costs a constant number of SQL
    # statements, whatever the number of versions (no per-version query).
    statements: list[str] = []
    real_connect = sqlite3.connect

    def traced_connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)  # type: ignore[arg-type]
        conn.set_trace_callback(statements.append)
        return conn

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sqlite3, "connect", traced_connect)
        fresh = LocalArtifactStore(store.root)  # opens its own connection through the tracer
        statements.clear()
        versions = list(fresh.list_versions())
    assert len(versions) == 10_000
    assert versions[-1].version == 9999 and versions[-1].aliases == ("latest",)
    assert versions[0].files == av.files
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert 0 < len(selects) <= 10, f"{len(selects)} SELECTs to list 10,000 versions"


def test_lineage(store: LocalArtifactStore, tmp_path: Path) -> None:
    av = _publish(store, tmp_path, run_id="writer-run")
    assert av.created_by_run == "writer-run"
    store.record_use(av, "reader-1")
    store.record_use(av, "reader-2")
    store.record_use(av, "reader-1")  # recorded once
    store.record_use(av, None)
    lin = store.lineage(av)
    assert lin.writer == "writer-run" and lin.readers == ("reader-1", "reader-2")
    anonymous = _publish(store, tmp_path)
    assert store.lineage(anonymous).writer is None
    import dataclasses

    ghost = dataclasses.replace(av, version=42)
    with pytest.raises(ArtifactNotFoundError, match="v42"):
        store.record_use(ghost, "r")
    with pytest.raises(ConfigurationError):
        store.record_use(av, "bad\nrun")


# --- the index itself --------------------------------------------------------------------------


def test_index_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    LocalArtifactStore(tmp_path / "s")
    with sqlite3.connect(tmp_path / "s" / "index.sqlite3") as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        LocalArtifactStore(tmp_path / "s")


def test_corrupt_index_is_a_typed_error(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "index.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="index"):
        LocalArtifactStore(tmp_path / "s")


def test_store_root_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StoreError, match="cannot create"):
        LocalArtifactStore(tmp_path / "file")


# --- staging and orphans -----------------------------------------------------------------------


def test_stale_staging_is_cleaned_but_live_staging_is_kept(tmp_path: Path) -> None:
    import fcntl

    store = LocalArtifactStore(tmp_path / "s", staging_max_age=0)
    staging = store.root / "staging"
    dead = staging / "1-1-dead"
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "f").write_bytes(b"half")
    live = staging / "2-2-live"
    live.mkdir()
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a publisher in progress holds
    try:
        _publish(store, tmp_path)
        assert not dead.exists()
        assert live.exists()
    finally:
        os.close(fd)
    # with the default age a fresh leftover is left alone
    fresh = LocalArtifactStore(tmp_path / "s")
    young = staging / "3-3-young"
    young.mkdir()
    _publish(fresh, tmp_path)
    assert young.exists()


def test_orphan_version_folder_is_replaced_not_trusted(
    store: LocalArtifactStore, tmp_path: Path
) -> None:
    _publish(store, tmp_path)
    orphan = store.root / "artifacts" / E / P / "model" / "v1"
    orphan.mkdir()
    (orphan / "model.bin").write_bytes(b"stale or planted")
    with pytest.raises(ArtifactNotFoundError):
        store.resolve(E, P, "model", version=1)
    av = _publish(store, tmp_path, data=b"fresh")
    assert av.version == 1
    assert [e.path for e in store.list_files(av)] == ["model.bin"]
    with store.open_file(av, "model.bin") as fh:
        assert fh.read() == b"fresh"


# --- several processes at once -----------------------------------------------------------------


def _worker(root: str, src_dir: str, worker: int, count: int) -> None:
    store = LocalArtifactStore(root)
    for i in range(count):
        a = Path(src_dir) / f"w{worker}-{i}-a"
        b = Path(src_dir) / f"w{worker}-{i}-b"
        a.write_bytes(f"{worker}:{i}".encode())
        b.write_bytes(os.urandom(2048))
        store.publish(
            entity=E,
            project=P,
            name="shared",
            type="dataset",
            files={"a.txt": a, "nested/b.bin": b},
            run_id=f"w{worker}-{i}",
            aliases=[f"w{worker}"],
        )


def _reader(root: str, stop_after: float) -> None:
    store = LocalArtifactStore(root)
    deadline = time.monotonic() + stop_after
    while time.monotonic() < deadline:
        try:
            av = store.resolve(E, P, "shared")
        except ArtifactNotFoundError:
            continue
        names = [e.path for e in store.list_files(av)]
        assert names == ["a.txt", "nested/b.bin"], names
        with store.open_file(av, "nested/b.bin") as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == av.files["nested/b.bin"].sha256
        store.record_use(av, "reader")


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_concurrent_publishers_and_readers(tmp_path: Path, start_method: str) -> None:
    root = tmp_path / "s"
    LocalArtifactStore(root)  # dropped: its index connection must not outlive it (sqlite_fork)
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    # fork: with the dropped store's connection still open (closed only by a later garbage
    # collection), the forked publishers lost every index row under pytest-xdist
    ctx = multiprocessing.get_context(start_method)
    procs = [ctx.Process(target=_worker, args=(str(root), str(src_dir), w, 10)) for w in range(4)]
    procs.append(ctx.Process(target=_reader, args=(str(root), 1.5)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    store = LocalArtifactStore(root)
    versions = list(store.list_versions(name="shared"))
    assert [v.version for v in versions] == list(range(40))
    assert sorted(v.created_by_run for v in versions) == sorted(
        f"w{w}-{i}" for w in range(4) for i in range(10)
    )
    assert store.resolve(E, P, "shared").version == 39
    assert set(store.aliases(E, P, "shared")) == {"latest", "w0", "w1", "w2", "w3"}
    assert _assert_complete(store) == 40
    folders = sorted(p.name for p in (root / "artifacts" / E / P / "shared").iterdir())
    assert folders == sorted(f"v{n}" for n in range(40))
    assert list((root / "staging").iterdir()) == []


def test_concurrent_threads_in_one_process(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = LocalArtifactStore(tmp_path / "s")
    sources = [_src(tmp_path, f"t{i}", str(i).encode()) for i in range(20)]

    def one(i: int) -> int:
        return store.publish(
            entity=E, project=P, name="threads", type="model", files={"f": sources[i]}
        ).version

    with ThreadPoolExecutor(max_workers=4) as pool:
        numbers = sorted(pool.map(one, range(20)))
    assert numbers == list(range(20))
    assert _assert_complete(store) == 20
    assert store.resolve(E, P, "threads").version == 19


# --- crash safety (SIGKILL) --------------------------------------------------------------------

# The child publishes two files and, at the named point, says "R" and waits to be killed.
_CHILD = r"""
import os, sys, time
from pathlib import Path
from dagster_wandb_secure.stores import local

root, point, src = sys.argv[1], sys.argv[2], Path(sys.argv[3])
S = local.LocalArtifactStore

def pause():
    sys.stdout.write("R\n")
    sys.stdout.flush()
    time.sleep(120)

if point == "between-files":
    orig_copy = S._copy_one
    seen = []
    def copy(*a, **k):
        if seen:
            pause()
        seen.append(1)
        return orig_copy(*a, **k)
    S._copy_one = staticmethod(copy)
elif point == "before-rename":
    orig_rename = os.rename
    def rename(a, b, *r, **k):
        if "/staging/" in str(a) and "/artifacts/" in str(b):
            pause()
        return orig_rename(a, b, *r, **k)
    os.rename = rename
elif point in ("after-rename", "rows-uncommitted"):
    orig_rows = S._write_rows
    def rows(self, *a, **k):
        if point == "after-rename":
            pause()
        orig_rows(self, *a, **k)
        pause()
    S._write_rows = rows
elif point == "committed":
    orig_commit = S._commit
    def commit(self, *a, **k):
        result = orig_commit(self, *a, **k)
        pause()
        return result
    S._commit = commit

store = S(root)
store.publish(entity="team", project="proj", name="crash", type="dataset",
              files={"a.bin": src / "a.bin", "big/b.bin": src / "b.bin"},
              aliases=["prod"], run_id="crasher")
sys.stdout.write("D\n")
sys.stdout.flush()
"""


def _kill_child(
    root: Path, src: Path, point: str, delay: float | None = None, until: str = "R"
) -> str:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(root), point, str(src)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if delay is None:
            # a selector (epoll), not select(): select() fails on descriptors >= 1024, which a
            # long suite run in one process can reach
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
                ready = sel.select(timeout=60)
            assert ready, f"child never reached {point}"
            line = proc.stdout.readline().strip()  # type: ignore[union-attr]
            assert line == until, (line, proc.stderr.read())  # type: ignore[union-attr]
        else:
            time.sleep(delay)
            line = "timed"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    return line


def _check_after_crash(root: Path, src: Path, expect_crash_version: bool) -> None:
    store = LocalArtifactStore(root)  # opens (and recovers) after the crash
    with sqlite3.connect(root / "index.sqlite3") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM pending").fetchone()[0] == 0
    indexed = {v.version for v in store.list_versions(name="crash")}
    assert indexed == ({0, 1} if expect_crash_version else {0})
    _assert_complete(store)
    on_disk = {p.name for p in (root / "artifacts" / E / P / "crash").iterdir()}
    assert on_disk == {f"v{n}" for n in indexed}, "a folder without an index row survived"
    assert store.resolve(E, P, "crash").version == max(indexed)
    # a new publish works and takes the next number
    av = store.publish(
        entity=E, project=P, name="crash", type="dataset", files={"a.bin": src / "a.bin"}
    )
    assert av.version == max(indexed) + 1
    _assert_complete(store)


@pytest.fixture
def crash_setup(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"small")
    (src / "b.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    root = tmp_path / "s"
    store = LocalArtifactStore(root)
    store.publish(entity=E, project=P, name="crash", type="dataset", files={"a.bin": src / "a.bin"})
    return root, src


@pytest.mark.parametrize(
    "point,visible",
    [
        ("between-files", False),
        ("before-rename", False),
        ("after-rename", False),
        ("rows-uncommitted", False),
        ("committed", True),
    ],
)
def test_sigkill_at_each_publish_step(
    crash_setup: tuple[Path, Path], point: str, visible: bool
) -> None:
    root, src = crash_setup
    assert _kill_child(root, src, point) == "R"
    if point == "after-rename":  # the folder is in place but not indexed until recovery
        assert (root / "artifacts" / E / P / "crash" / "v1").exists()
    _check_after_crash(root, src, expect_crash_version=visible)
    if point in ("between-files", "before-rename"):
        leftovers = list((root / "staging").iterdir())
        assert len(leftovers) == 1  # young: kept for now, ignored by readers
        LocalArtifactStore(root, staging_max_age=0).publish(
            entity=E, project=P, name="crash", type="dataset", files={"a.bin": src / "a.bin"}
        )
        assert list((root / "staging").iterdir()) == []


def test_sigkill_at_random_moments(crash_setup: tuple[Path, Path]) -> None:
    root, src = crash_setup
    (src / "b.bin").write_bytes(os.urandom(32 * 1024 * 1024))  # the copy takes a while
    started = time.perf_counter()
    assert _kill_child(root, src, "none", delay=None, until="D") == "D"  # one full run: timing
    full = time.perf_counter() - started
    rng = random.Random(1234)
    for _ in range(8):
        _kill_child(root, src, "none", delay=rng.uniform(0.3 * full, 1.1 * full))
        store = LocalArtifactStore(root)
        with sqlite3.connect(root / "index.sqlite3") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        indexed = {v.version for v in store.list_versions(name="crash")}
        assert indexed == set(range(len(indexed)))
        _assert_complete(store)
        on_disk = {p.name for p in (root / "artifacts" / E / P / "crash").iterdir()}
        assert on_disk == {f"v{n}" for n in indexed}
    n = len(list(store.list_versions(name="crash")))
    av = LocalArtifactStore(root, staging_max_age=0).publish(
        entity=E, project=P, name="crash", type="dataset", files={"a.bin": src / "a.bin"}
    )
    assert av.version == n
    assert list((root / "staging").iterdir()) == []
