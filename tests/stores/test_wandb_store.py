"""WandbArtifactStore and open_store.

The OFFLINE path runs for real: real ``wandb.init`` in offline mode inside the test's own
WANDB_DIR (see tests/conftest.py), real local mirror, and a check of what the offline run folder
holds after ``run.finish()``.

The ONLINE path needs a W&B server, which cannot run here. It goes through ONE seam: the
``sdk`` constructor argument of ``WandbArtifactStore``, given a ``FakeWandbServer`` below that
fakes only the wandb calls the store makes (``init``, ``Run.log_artifact`` / ``use_artifact`` /
``finish``, ``Artifact`` with ``add_file`` / ``wait`` / ``download`` / ``manifest`` /
``get_entry`` (whose entry has ``download``), and ``Api``
with ``artifact`` / ``artifact_types``), and uses the real ``wandb.errors`` classes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import wandb

from dagster_wandb_secure.core.errors import ConfigurationError, UnsafePathError
from dagster_wandb_secure.stores import open_store, select_store_kind
from dagster_wandb_secure.stores.base import ArtifactNotFoundError, StoreError
from dagster_wandb_secure.stores.local import LocalArtifactStore
from dagster_wandb_secure.stores.wandb_store import (
    DAGSTER_WANDB_TAG,
    MIN_CACHE_AGE,
    WandbArtifactStore,
)

ENTITY, PROJECT = "team", "proj"
API_KEY = "test-api-key-0123456789abcdef0123456789abcdef"  # a made-up key; must never be written


# --- the seam: a fake W&B server ----------------------------------------------------------------


class _Entry:
    def __init__(self, path: str, data: bytes, server: FakeWandbServer | None = None) -> None:
        self.path = path
        self.data = data
        self.size = len(data)
        self.digest = base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 (W&B's)
        self._server = server

    def download(self, root: str | None = None, **_: Any) -> str:
        """``ArtifactManifestEntry.download``: this one file, at its path below ``root``."""
        assert self._server is not None
        self._server.served.append(self.path)
        self._server.calls.append(("entry_download", self.path))
        path = Path(root or ".") / self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.data)
        return str(path)


class _Manifest:
    def __init__(self, entries: dict[str, _Entry]) -> None:
        self.entries = entries


class FakeArtifact:
    """A client-side artifact (built by the store) or a server-side one (fetched)."""

    def __init__(
        self,
        server: FakeWandbServer,
        name: str,
        type: str,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._server = server
        self._name = name
        self.type = type
        self.description = description
        self.metadata = dict(metadata or {})
        self._added: dict[str, str] = {}
        self._committed: dict[str, Any] | None = None  # the server record once logged
        self._waited = False

    # client side
    def add_file(self, local_path: str, name: str | None = None, policy: str = "mutable") -> None:
        self._added[name or Path(local_path).name] = local_path

    def wait(self, timeout: int | None = None) -> FakeArtifact:
        self._server.calls.append(("wait", self._name))
        self._server.maybe_fail("wait")
        if self._committed is None:
            raise wandb.errors.CommError("artifact was never logged")
        self._waited = True
        return self

    # server side (valid after wait, or when fetched)
    def _record(self) -> dict[str, Any]:
        if self._committed is None or not self._waited:
            raise AttributeError("'Artifact.version' used prior to logging artifact")
        return self._committed

    @property
    def version(self) -> str:
        return f"v{self._record()['number']}"

    @property
    def aliases(self) -> list[str]:
        rec = self._record()
        coll = self._server.collections[rec["key"]]
        return [a for a, n in coll["aliases"].items() if n == rec["number"]]

    @property
    def digest(self) -> str:
        return self._record()["digest"]

    @property
    def id(self) -> str:
        return f"art-{self._record()['digest'][:8]}"

    @property
    def url(self) -> str:
        e, p, n = self._record()["key"]
        return f"https://fake.wandb.invalid/{e}/{p}/artifacts/{self.type}/{n}/{self.version}"

    @property
    def size(self) -> int:
        return sum(len(d) for d in self._record()["files"].values())

    @property
    def created_at(self) -> str:
        return "2026-01-02T03:04:05Z"

    @property
    def manifest(self) -> _Manifest:
        files = self._record()["files"]
        return _Manifest({p: _Entry(p, d) for p, d in files.items()})

    def get_entry(self, name: str) -> _Entry:
        files = self._record()["files"]
        if name not in files:
            raise KeyError(f"Path not contained in artifact: {name}")
        return _Entry(name, files[name], self._server)

    def download(self, root: str | None = None, **_: Any) -> str:
        rec = self._record()
        self._server.calls.append(("download", f"{rec['key'][2]}:{self.version}"))
        self._server.maybe_fail("download")
        target = Path(root or ".")
        for rel, data in rec["files"].items():
            self._server.served.append(rel)
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        for hook in self._server.download_hooks:
            hook(target)
        return str(target)


class FakeRun:
    def __init__(self, server: FakeWandbServer, **kwargs: Any) -> None:
        self._server = server
        self.kwargs = kwargs
        self.id = kwargs.get("id") or "generated-run-id"
        self.name = kwargs.get("name") or "generated-name"
        self.entity = kwargs["entity"]
        self.project = kwargs["project"]
        self.finished = False
        self.used: list[str] = []

    @property
    def path(self) -> str:
        return f"{self.entity}/{self.project}/{self.id}"

    @property
    def url(self) -> str:
        return f"https://fake.wandb.invalid/{self.path}"

    def log_artifact(
        self, artifact: FakeArtifact, aliases: list[str] | None = None
    ) -> FakeArtifact:
        self._server.calls.append(("log_artifact", artifact._name, tuple(aliases or ())))
        self._server.maybe_fail("log_artifact")
        files = {rel: Path(src).read_bytes() for rel, src in artifact._added.items()}
        artifact._committed = self._server.commit(
            self.entity, self.project, artifact, files, list(aliases or ())
        )
        return artifact

    def use_artifact(self, ref: str) -> FakeArtifact:
        self._server.calls.append(("use_artifact", ref))
        self.used.append(ref)
        return self._server.lookup(ref)

    def finish(self) -> None:
        self._server.calls.append(("finish", self.id))
        self.finished = True


class _FakeCollection:
    def __init__(self, server: FakeWandbServer, key: tuple[str, str, str]) -> None:
        self._server = server
        self._key = key
        self.name = key[2]

    def artifacts(self) -> list[FakeArtifact]:
        coll = self._server.collections[self._key]
        return [self._server.fetched(rec) for rec in reversed(coll["versions"])]


class _FakeType:
    def __init__(self, name: str, collections: list[_FakeCollection]) -> None:
        self.name = name
        self._collections = collections

    def collections(self) -> list[_FakeCollection]:
        return self._collections


class FakeApi:
    def __init__(self, server: FakeWandbServer) -> None:
        self._server = server

    def artifact(self, name: str, type: str | None = None) -> FakeArtifact:
        self._server.calls.append(("api.artifact", name))
        return self._server.lookup(name)

    def artifact_types(self, project: str | None = None) -> list[_FakeType]:
        entity, proj = (project or "").split("/")
        by_type: dict[str, list[_FakeCollection]] = {}
        for key, coll in self._server.collections.items():
            if key[:2] == (entity, proj):
                by_type.setdefault(coll["type"], []).append(_FakeCollection(self._server, key))
        return [_FakeType(t, c) for t, c in by_type.items()]


class FakeWandbServer:
    """The test seam, passed as ``sdk=``: an in-memory W&B with the few calls the store uses."""

    errors = wandb.errors

    def __init__(self) -> None:
        self.collections: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.init_calls: list[dict[str, Any]] = []
        self.api_calls: list[dict[str, Any]] = []
        self.runs: list[FakeRun] = []
        self.failures: dict[str, BaseException] = {}
        self.download_hooks: list[Any] = []
        self.served: list[str] = []  # every file path the server sent, in order

    # the wandb module surface
    def init(self, **kwargs: Any) -> FakeRun:
        self.init_calls.append(kwargs)
        self.maybe_fail("init")
        run = FakeRun(self, **kwargs)
        self.runs.append(run)
        return run

    def Artifact(self, name: str, type: str, description: str | None = None, metadata: Any = None):  # noqa: N802
        return FakeArtifact(self, name, type, description, metadata)

    def Api(self, api_key: str | None = None, overrides: Any = None, timeout: Any = None):  # noqa: N802
        self.api_calls.append({"api_key": api_key, "overrides": overrides})
        self.maybe_fail("Api")
        return FakeApi(self)

    # server internals
    def maybe_fail(self, what: str) -> None:
        exc = self.failures.get(what)
        if exc is not None:
            raise exc

    def commit(
        self,
        entity: str,
        project: str,
        artifact: FakeArtifact,
        files: dict[str, bytes],
        aliases: list[str],
    ) -> dict[str, Any]:
        key = (entity, project, artifact._name)
        coll = self.collections.setdefault(
            key, {"type": artifact.type, "versions": [], "aliases": {}}
        )
        number = len(coll["versions"])
        digest = hashlib.sha256(
            b"".join(
                hashlib.sha256(p.encode() + b"\0" + d).digest() for p, d in sorted(files.items())
            )
        ).hexdigest()
        rec = {
            "key": key,
            "number": number,
            "files": files,
            "digest": digest,
            "type": artifact.type,
            "description": artifact.description,
            "metadata": dict(artifact.metadata),
        }
        coll["versions"].append(rec)
        for alias in [*aliases, "latest"]:
            coll["aliases"][alias] = number
        return rec

    def fetched(self, rec: dict[str, Any]) -> FakeArtifact:
        art = FakeArtifact(self, rec["key"][2], rec["type"], rec["description"], rec["metadata"])
        art._committed = rec
        art._waited = True
        return art

    def lookup(self, ref: str) -> FakeArtifact:
        self.maybe_fail("lookup")
        path, _, label = ref.partition(":")
        entity, project, name = path.split("/")
        coll = self.collections.get((entity, project, name))
        if coll is None:
            raise ValueError(f"artifact membership {name!r} not found in '{entity}/{project}'")
        if label.startswith("v") and label[1:].isdigit():
            number = int(label[1:])
            if number >= len(coll["versions"]):
                raise ValueError(f"artifact membership {name}:{label!r} not found")
        elif label in coll["aliases"]:
            number = coll["aliases"][label]
        else:
            raise ValueError(f"artifact membership {name}:{label!r} not found")
        return self.fetched(coll["versions"][number])

    def put(self, name: str, files: dict[str, bytes], *, type: str = "dataset") -> None:
        """Store a version directly, as some other writer (or an attacker) would."""
        art = FakeArtifact(self, name, type)
        self.commit(ENTITY, PROJECT, art, files, [])

    def count(self, what: str) -> int:
        return sum(1 for c in self.calls if c[0] == what)


# --- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
def server() -> FakeWandbServer:
    return FakeWandbServer()


@pytest.fixture
def online(tmp_path: Path, server: FakeWandbServer) -> Iterator[WandbArtifactStore]:
    store = WandbArtifactStore(
        entity=ENTITY,
        project=PROJECT,
        base_dir=tmp_path / "base",
        api_key=API_KEY,
        host="https://wandb.example.invalid",
        mode="online",
        run_id="dagster-run-1234",
        run_name="dagster-run-dagster-",
        run_tags=["nightly"],
        sdk=server,
    )
    yield store
    store.close()


def _src(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _publish(store: WandbArtifactStore, tmp_path: Path, name: str = "art", **kw: Any):
    files = kw.pop("files", None) or {
        "output.pickle": _src(tmp_path, f"{name}-a", b"payload-" + name.encode()),
        "sub/manifest.json": _src(tmp_path, f"{name}-b", b"{}"),
    }
    return store.publish(
        entity=ENTITY, project=PROJECT, name=name, type="dataset", files=files, **kw
    )


def _wandb_records(run_dir: Path) -> list[Any]:
    """Parse the records of an offline run's ``.wandb`` file (LevelDB log framing of protobuf
    ``Record`` messages). Test-only use of wandb's non-public record format."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, out = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            payload: bytes | None = chunk
        elif kind == 2:
            pending, payload = chunk, None
        elif kind == 3:
            pending, payload = pending + chunk, None
        elif kind == 4:
            payload, pending = pending + chunk, b""
        else:
            continue
        if payload is not None:
            rec = pb.Record()
            rec.ParseFromString(payload)
            out.append(rec)
    return out


def _flushed_records(run_dir: Path, timeout: float = 30.0) -> list[Any]:
    """The records once wandb's service has flushed the whole log (it writes asynchronously,
    so ``run.finish()`` can return before the file is complete)."""
    deadline = time.monotonic() + timeout
    while True:
        records = _wandb_records(run_dir)
        if records and records[-1].WhichOneof("record_type") == "exit":
            return records
        assert time.monotonic() < deadline, [r.WhichOneof("record_type") for r in records]
        time.sleep(0.05)


def _forbid(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError(f"wandb.{name} must not be called here")

    monkeypatch.setattr(wandb, name, refuse)


# --- offline, for real --------------------------------------------------------------------------


def test_offline_publish_logs_to_the_offline_run_and_mirrors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    _forbid(monkeypatch, "Api")
    base = tmp_path / "base"
    store = WandbArtifactStore(
        entity=ENTITY,
        project=PROJECT,
        base_dir=base,
        api_key=API_KEY,
        run_id="dagster-run-0001",
        run_name="dagster-run-dagster-",
        run_tags=["nightly"],
    )
    assert store.offline  # WANDB_MODE=offline from conftest
    v0 = _publish(store, tmp_path, metadata={"source_integration": "x"})
    v1 = _publish(store, tmp_path, aliases=["best", "dagster-run-0001"], description="second")
    assert (v0.version, v1.version) == (0, 1)
    assert set(v1.aliases) == {"best", "dagster-run-0001", "latest"}
    assert v1.extra["wandb_mode"] == "offline"
    assert v1.extra["wandb_run_id"] == "dagster-run-0001"
    run_dir = Path(v1.extra["wandb_offline_run_dir"])
    store.close()
    store.close()  # idempotent

    # the offline run holds the run (tags, id) and both artifacts with their manifests
    records = _flushed_records(run_dir)
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert runs and runs[0].run_id == "dagster-run-0001"
    assert {"nightly", DAGSTER_WANDB_TAG} <= set(runs[0].tags)
    arts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert [a.name for a in arts] == ["art", "art"]
    assert arts[0].type == "dataset" and arts[0].entity == ENTITY and arts[0].project == PROJECT
    assert '"source_integration"' in arts[0].metadata
    assert {"best", "dagster-run-0001"} <= set(arts[1].aliases)
    assert arts[1].description == "second"
    for art in arts:
        contents = {e.path: e for e in art.manifest.contents}
        assert set(contents) == {"output.pickle", "sub/manifest.json"}
        for rel, entry in contents.items():
            # wandb staged its own copy for `wandb sync`: the same bytes the mirror holds
            assert Path(entry.local_path).read_bytes() == (v1.root / rel).read_bytes()

    # reads come from the mirror (the source of truth offline)
    mirror = LocalArtifactStore(base / "wandb-secure" / "store")
    assert mirror.resolve(ENTITY, PROJECT, "art").version == 1
    reader = WandbArtifactStore(entity=ENTITY, project=PROJECT, base_dir=base)
    _forbid(monkeypatch, "init")
    assert reader.resolve(ENTITY, PROJECT, "art").version == 1
    assert reader.resolve(ENTITY, PROJECT, "art", alias="best").version == 1
    first = reader.resolve(ENTITY, PROJECT, "art", version="v0")
    with reader.open_file(first, "output.pickle") as fh:
        assert fh.read() == b"payload-art"
    assert reader.file_path(first, "sub/manifest.json").read_bytes() == b"{}"
    assert [e.path for e in reader.list_files(first)] == ["output.pickle", "sub/manifest.json"]
    assert [av.version for av in reader.list_versions(name="art")] == [0, 1]
    reader.record_use(first, "reader-run")
    assert reader.run is None  # no W&B run was needed to read offline

    # the API key is never written anywhere (it is not even passed to wandb offline)
    assert API_KEY not in repr(store)
    for path in isolated_env.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert API_KEY.encode() not in path.read_bytes(), path
    for path in base.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert API_KEY.encode() not in path.read_bytes(), path


def test_construction_validates_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid(monkeypatch, "init")
    _forbid(monkeypatch, "Api")
    base = tmp_path / "base"
    store = WandbArtifactStore(entity=ENTITY, project=PROJECT, base_dir=base, run_id="r-1")
    assert store._sdk is wandb  # the default sdk is the real wandb module
    assert store.run is None and not base.exists()
    assert store.run_info() == {}
    store.close()  # nothing to finish


def test_offline_run_that_cannot_start_leaves_no_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_init(**_: Any) -> None:
        raise wandb.errors.UsageError("simulated: cannot start")

    monkeypatch.setattr(wandb, "init", broken_init)
    base = tmp_path / "base"
    store = WandbArtifactStore(entity=ENTITY, project=PROJECT, base_dir=base)
    with pytest.raises(StoreError) as info:
        _publish(store, tmp_path)
    assert isinstance(info.value.__cause__, wandb.errors.UsageError)
    assert "What to do" in str(info.value) and "team/proj" in str(info.value)
    mirror = LocalArtifactStore(base / "wandb-secure" / "store")
    assert list(mirror.list_versions()) == []


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["a/b", "a\\b", "a#b", "a?b", "a%b", "a:b", "", " a", "a b"])
def test_run_id_with_forbidden_characters_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigurationError, match="run_id"):
        WandbArtifactStore(entity=ENTITY, project=PROJECT, base_dir=tmp_path, run_id=bad)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"entity": None}, "entity"),
        ({"project": "a/b"}, "project"),
        ({"host": "ftp://wandb.example"}, "host"),
        ({"host": "https://user:pw@wandb.example"}, "host"),
        ({"mode": "disabled"}, "mode"),
        ({"cache_duration": timedelta(minutes=-1)}, "cache duration"),
        ({"run_tags": "one-string"}, "run_tags"),
        ({"run_tags": ["x" * 65]}, "run tag"),
        ({"api_key": " padded "}, "api_key"),
        ({"run_name": "bad\nname"}, "run_name"),
    ],
)
def test_invalid_configuration_is_a_clear_error(
    tmp_path: Path, server: FakeWandbServer, kwargs: dict[str, Any], match: str
) -> None:
    args: dict[str, Any] = {
        "entity": ENTITY,
        "project": PROJECT,
        "base_dir": tmp_path,
        "sdk": server,
    }
    args.update(kwargs)
    with pytest.raises(ConfigurationError, match=match) as info:
        WandbArtifactStore(**args)
    assert "What to do" in str(info.value) or info.value.hint == ""
    assert server.init_calls == []


def test_mode_comes_from_argument_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeWandbServer
) -> None:
    def make(**kw: Any) -> WandbArtifactStore:
        return WandbArtifactStore(
            entity=ENTITY, project=PROJECT, base_dir=tmp_path, sdk=server, **kw
        )

    assert make().mode == "offline"  # conftest sets WANDB_MODE=offline
    assert make(mode="online").mode == "online"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert make().mode == "online"
    assert make(mode="offline").mode == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with pytest.raises(ConfigurationError, match="WANDB_MODE"):
        make()


def test_publish_input_is_checked_before_any_run_starts(
    online: WandbArtifactStore, server: FakeWandbServer, tmp_path: Path
) -> None:
    src = _src(tmp_path, "f", b"x")
    with pytest.raises(ConfigurationError, match="other/proj"):
        online.publish(entity="other", project=PROJECT, name="a", type="dataset", files={"f": src})
    with pytest.raises(ConfigurationError, match="alias"):
        _publish(online, tmp_path, aliases=["v3"])
    with pytest.raises(ConfigurationError, match="artifact name"):
        _publish(online, tmp_path, name="../x")
    with pytest.raises(StoreError, match="empty"):
        online.publish(entity=ENTITY, project=PROJECT, name="a", type="dataset", files={})
    for bad in ("../x", "/abs", "a//b", "a\x00b"):
        with pytest.raises(UnsafePathError):
            online.publish(
                entity=ENTITY, project=PROJECT, name="a", type="dataset", files={bad: src}
            )
    link = tmp_path / "link"
    link.symlink_to(src)
    with pytest.raises(UnsafePathError, match="symlink"):
        online.publish(entity=ENTITY, project=PROJECT, name="a", type="dataset", files={"f": link})
    assert server.init_calls == [] and server.count("log_artifact") == 0


# --- online, through the seam -------------------------------------------------------------------


def test_online_publish_logs_waits_and_returns_the_cached_version(
    online: WandbArtifactStore, server: FakeWandbServer, tmp_path: Path
) -> None:
    v0 = _publish(online, tmp_path, aliases=["best"], metadata={"k": 1}, run_id="dagster-1")
    v1 = _publish(online, tmp_path)
    assert (v0.version, v1.version) == (0, 1)
    # one lazily started run, with the upstream-compatible arguments
    assert len(server.init_calls) == 1
    init = server.init_calls[0]
    assert init["entity"] == ENTITY and init["project"] == PROJECT
    assert init["id"] == "dagster-run-1234" and init["name"] == "dagster-run-dagster-"
    assert init["resume"] == "allow" and init["mode"] == "online"
    assert init["tags"] == ["nightly", DAGSTER_WANDB_TAG]
    assert init["dir"] == str(tmp_path / "base")
    assert init["settings"] == {
        "api_key": API_KEY, "base_url": "https://wandb.example.invalid", "init_timeout": 30.0
    }
    assert ("log_artifact", "art", ("best",)) in server.calls
    assert server.count("wait") == 2
    # the returned version lives in the cache, described from the bytes actually uploaded
    assert v0.root == tmp_path / "base" / "wandb-secure" / "cache" / ENTITY / PROJECT / "art" / "v0"
    assert (v0.root / "output.pickle").read_bytes() == b"payload-art"
    assert v0.files["output.pickle"].sha256 == hashlib.sha256(b"payload-art").hexdigest()
    assert v0.files["sub/manifest.json"].size == 2
    assert v0.aliases == ("best", "latest") and v0.created_by_run == "dagster-1"
    assert v0.metadata == {"k": 1}
    assert v0.extra["wandb_artifact_id"].startswith("art-")
    assert v0.extra["wandb_run_path"] == f"{ENTITY}/{PROJECT}/dagster-run-1234"
    assert v0.extra["wandb_run_url"].startswith("https://")
    assert server.collections[(ENTITY, PROJECT, "art")]["versions"][0]["files"][
        "output.pickle"
    ] == (b"payload-art")
    assert not list((v0.root.parent).glob(".publish-*"))  # staging cleaned up
    assert API_KEY not in repr(online) and server.api_calls == []


def test_online_resolve_without_a_run_uses_the_api_and_the_cache(
    tmp_path: Path, server: FakeWandbServer
) -> None:
    server.put("data", {"output.pickle": b"one"})
    server.put("data", {"output.pickle": b"two", "extra/table.json": b"[]"})
    store = WandbArtifactStore(
        entity=ENTITY,
        project=PROJECT,
        base_dir=tmp_path,
        mode="online",
        api_key=API_KEY,
        sdk=server,
    )
    av = store.resolve(ENTITY, PROJECT, "data")
    assert av.version == 1 and set(av.files) == {"output.pickle", "extra/table.json"}
    assert av.root.is_dir() and (av.root / "extra" / "table.json").read_bytes() == b"[]"
    assert av.files["output.pickle"].sha256 == hashlib.sha256(b"two").hexdigest()
    assert av.aliases == ("latest",) and av.type == "dataset"
    assert av.created_at.year == 2026
    assert server.init_calls == [] and len(server.api_calls) == 1
    assert server.api_calls[0] == {"api_key": API_KEY, "overrides": None}
    # a second resolve of the same version is served from the cache
    again = store.resolve(ENTITY, PROJECT, "data", version=1)
    assert again.root == av.root and server.count("download") == 1
    assert store.resolve(ENTITY, PROJECT, "data", version="v0").files["output.pickle"].size == 3
    assert server.count("download") == 2 and len(server.api_calls) == 1
    with store.open_file(av, "output.pickle") as fh:
        assert fh.read() == b"two"
    assert [v.version for v in store.list_versions(name="data")] == [0, 1]
    server.put("run-xyz-history", {"h.parquet": b"h"}, type="wandb-history")
    assert [(v.name, v.version) for v in store.list_versions()] == [("data", 0), ("data", 1)]
    assert [e.path for e in store.list_files(av)] == ["extra/table.json", "output.pickle"]


def test_online_resolve_with_a_run_uses_use_artifact_and_records_lineage_once(
    online: WandbArtifactStore, server: FakeWandbServer, tmp_path: Path
) -> None:
    _publish(online, tmp_path)
    av = online.resolve(ENTITY, PROJECT, "art", alias="latest")
    assert server.runs[0].used == [f"{ENTITY}/{PROJECT}/art:latest"]
    online.record_use(av, "dagster-2")  # already declared as an input of this run
    assert server.runs[0].used == [f"{ENTITY}/{PROJECT}/art:latest"]
    assert server.api_calls == []


def test_online_record_use_starts_the_run_and_declares_the_input(
    tmp_path: Path, server: FakeWandbServer
) -> None:
    server.put("data", {"f": b"x"})
    store = WandbArtifactStore(
        entity=ENTITY, project=PROJECT, base_dir=tmp_path, mode="online", sdk=server
    )
    av = store.resolve(ENTITY, PROJECT, "data")
    assert server.init_calls == []
    store.record_use(av, "dagster-3")
    store.record_use(av, "dagster-3")
    assert len(server.init_calls) == 1 and server.runs[0].used == [f"{ENTITY}/{PROJECT}/data:v0"]
    # no key, no host: wandb's own lookup; only the start-up timeout (default 30 s) is set
    assert server.init_calls[0]["settings"] == {"init_timeout": 30.0}
    store.close()
    assert server.runs[0].finished


def test_online_missing_artifact_is_not_found_with_the_cause(
    online: WandbArtifactStore, server: FakeWandbServer
) -> None:
    with pytest.raises(ArtifactNotFoundError) as info:
        online.resolve(ENTITY, PROJECT, "nothing", alias="best")
    assert isinstance(info.value.__cause__, ValueError)
    assert f"{ENTITY}/{PROJECT}/nothing:best" in str(info.value)
    assert "What to do" in str(info.value)
    server.put("data", {"f": b"x"})
    with pytest.raises(ArtifactNotFoundError, match="data:v7"):
        online.resolve(ENTITY, PROJECT, "data", version=7)
    with pytest.raises(ConfigurationError, match="not both"):
        online.resolve(ENTITY, PROJECT, "data", version=0, alias="latest")


def test_online_server_errors_are_store_errors_without_the_key(
    online: WandbArtifactStore, server: FakeWandbServer, tmp_path: Path
) -> None:
    server.failures["wait"] = wandb.errors.CommError(f"HTTP 502 while committing (key {API_KEY})")
    with pytest.raises(StoreError) as info:
        _publish(online, tmp_path)
    assert isinstance(info.value.__cause__, wandb.errors.CommError)
    assert "team/proj/art" in str(info.value) and "What to do" in str(info.value)
    assert API_KEY not in str(info.value)
    cache = tmp_path / "base" / "wandb-secure" / "cache" / ENTITY / PROJECT / "art"
    assert not list(cache.glob(".publish-*")) and not list(cache.glob("v*"))

    server.failures = {"lookup": wandb.errors.AuthenticationError("bad key")}
    with pytest.raises(StoreError, match="API key") as info2:
        online.resolve(ENTITY, PROJECT, "art")
    assert isinstance(info2.value.__cause__, wandb.errors.AuthenticationError)

    server.failures = {"init": ValueError("https://wandb.example.invalid is not a valid server address")}
    bad_host = WandbArtifactStore(
        entity=ENTITY, project=PROJECT, base_dir=tmp_path / "b3", mode="online", sdk=server
    )
    with pytest.raises(ConfigurationError, match="not a valid server address"):
        _publish(bad_host, tmp_path, name="other")

    server.failures = {"init": wandb.errors.CommError("cannot reach host")}
    other = WandbArtifactStore(
        entity=ENTITY, project=PROJECT, base_dir=tmp_path / "b2", mode="online", sdk=server
    )
    with pytest.raises(StoreError, match="could not start the W&B run"):
        _publish(other, tmp_path, name="other")


def test_online_unexpected_errors_propagate_with_context(
    online: WandbArtifactStore, server: FakeWandbServer, tmp_path: Path
) -> None:
    server.failures["log_artifact"] = RuntimeError("something unforeseen")
    with pytest.raises(RuntimeError, match="something unforeseen") as info:
        _publish(online, tmp_path)
    assert any("team/proj/art" in note for note in getattr(info.value, "__notes__", []))


@pytest.mark.parametrize("bad", ["../escape", "/abs/path", "a//b", "nul\x00name", "."])
def test_online_unsafe_manifest_names_are_refused_before_download(
    online: WandbArtifactStore, server: FakeWandbServer, tmp_path: Path, bad: str
) -> None:
    server.put("evil", {bad: b"boom", "ok": b"fine"})
    with pytest.raises(UnsafePathError) as info:
        online.resolve(ENTITY, PROJECT, "evil")
    assert "team/proj/evil" in str(info.value)
    assert server.count("download") == 0
    assert not (tmp_path / "escape").exists() and not (tmp_path / "base" / "escape").exists()


def test_online_downloaded_symlink_or_extra_file_is_refused(
    online: WandbArtifactStore, server: FakeWandbServer, tmp_path: Path
) -> None:
    server.put("data", {"output.pickle": b"x"})
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours")
    server.download_hooks = [lambda root: (root / "link").symlink_to(secret)]
    with pytest.raises(UnsafePathError, match="symlink"):
        online.resolve(ENTITY, PROJECT, "data")
    server.download_hooks = [lambda root: (root / "planted.pickle").write_bytes(b"evil")]
    with pytest.raises(StoreError, match="planted.pickle"):
        online.resolve(ENTITY, PROJECT, "data")
    name_dir = tmp_path / "base" / "wandb-secure" / "cache" / ENTITY / PROJECT / "data"
    assert not (name_dir / "v0").exists() and not list(name_dir.glob(".v0.download-*"))
    server.download_hooks = []
    assert online.resolve(ENTITY, PROJECT, "data").files.keys() == {"output.pickle"}


def test_online_file_access_refuses_escapes_symlinks_and_unknown_files(
    online: WandbArtifactStore, server: FakeWandbServer, tmp_path: Path
) -> None:
    server.put("data", {"output.pickle": b"x", "b.txt": b"y"})
    av = online.resolve(ENTITY, PROJECT, "data")
    with pytest.raises(UnsafePathError):
        online.file_path(av, "../../../etc/passwd")
    with pytest.raises(ArtifactNotFoundError, match="nope"):
        online.open_file(av, "nope")
    # a file planted in the cache is handed out like the local store does: refusing an
    # unsigned extra file is the verifier's job (it sees it in list_files)
    (av.root / "planted.pickle").write_bytes(b"evil")
    assert online.file_path(av, "planted.pickle") == av.root / "planted.pickle"
    assert "planted.pickle" in [e.path for e in online.list_files(av)]
    (av.root / "sub").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "inner.txt").write_bytes(b"outside")
    with pytest.raises(UnsafePathError, match="symlink"):
        online.file_path(av, "sub/inner.txt")
    (av.root / "sub").unlink()
    (av.root / "planted.pickle").unlink()
    # a cache tamperer swaps a file for a symlink after resolve
    (av.root / "b.txt").unlink()
    (av.root / "b.txt").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError, match="symlink"):
        online.open_file(av, "b.txt")
    assert any(e.kind == "symlink" for e in online.list_files(av))
    # ... and the next resolve throws the tampered copy away and downloads again
    again = online.resolve(ENTITY, PROJECT, "data")
    assert not (again.root / "b.txt").is_symlink() and server.count("download") == 2
    # same for a cached file whose size no longer matches the W&B manifest
    (again.root / "output.pickle").chmod(0o644)
    (again.root / "output.pickle").write_bytes(b"tampered, longer")
    third = online.resolve(ENTITY, PROJECT, "data")
    assert (third.root / "output.pickle").read_bytes() == b"x" and server.count("download") == 3


def test_online_download_not_matching_the_manifest_sizes_is_refused(
    online: WandbArtifactStore, server: FakeWandbServer
) -> None:
    server.put("data", {"output.pickle": b"0123456789"})
    server.download_hooks = [lambda root: (root / "output.pickle").write_bytes(b"short")]
    with pytest.raises(StoreError, match="wrong size"):
        online.resolve(ENTITY, PROJECT, "data")


# --- the download cache -------------------------------------------------------------------------


def _cache_store(tmp_path: Path, server: FakeWandbServer, minutes: float) -> WandbArtifactStore:
    return WandbArtifactStore(
        entity=ENTITY,
        project=PROJECT,
        base_dir=tmp_path,
        mode="online",
        cache_duration=timedelta(minutes=minutes),
        sdk=server,
    )


def test_cache_cleanup_removes_only_versions_unused_for_the_duration(
    tmp_path: Path, server: FakeWandbServer
) -> None:
    server.put("a", {"f": b"1"})
    server.put("b", {"f": b"2"})
    store = _cache_store(tmp_path, server, minutes=60)
    old = store.resolve(ENTITY, PROJECT, "a")
    assert store.cleanup_cache() == []  # just used
    later = time.time() + 30 * 60
    new = store.resolve(ENTITY, PROJECT, "b")
    assert store.cleanup_cache(now=later) == []
    # an hour after "a" was used; "b" is used again (touch on use) half an hour later
    stamp_b = new.root.parent / ".v0.used"
    os.utime(stamp_b, (later, later))
    removed = store.cleanup_cache(now=time.time() + 61 * 60)
    assert removed == [old.root] and not old.root.exists() and new.root.exists()
    with pytest.raises(StoreError, match="resolve the version again"):
        store.file_path(old, "f")
    assert store.resolve(ENTITY, PROJECT, "a").root.is_dir()  # downloaded again
    assert server.count("download") == 3


def test_cache_duration_zero_still_protects_a_fresh_version(
    tmp_path: Path, server: FakeWandbServer
) -> None:
    server.put("a", {"f": b"1"})
    store = _cache_store(tmp_path, server, minutes=0)
    av = store.resolve(ENTITY, PROJECT, "a")
    assert store.cleanup_cache() == [] and av.root.exists()
    grace = MIN_CACHE_AGE.total_seconds()
    assert store.cleanup_cache(now=time.time() + grace + 1) == [av.root]


def test_cache_cleanup_never_removes_a_version_another_process_holds(
    tmp_path: Path, server: FakeWandbServer
) -> None:
    server.put("a", {"f": b"1"})
    store = _cache_store(tmp_path, server, minutes=1)
    av = store.resolve(ENTITY, PROJECT, "a")
    lock_path = av.root.parent / ".v0.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from filelock import FileLock\n"
            "lock = FileLock(sys.argv[1]); lock.acquire()\n"
            "print('locked', flush=True); time.sleep(60)\n",
            str(lock_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        download = av.root.parent / ".v0.download-0123abcd"  # as if being downloaded
        download.mkdir()
        far = time.time() + 24 * 3600
        assert store.cleanup_cache(now=far) == [] and av.root.exists() and download.exists()
    finally:
        holder.kill()
        holder.wait()
    assert store.cleanup_cache(now=time.time() + 24 * 3600) == [av.root]
    assert not download.exists()  # a download whose lock is free died with its process


def test_close_finishes_the_run_and_a_later_publish_resumes(
    online: WandbArtifactStore, server: FakeWandbServer, tmp_path: Path
) -> None:
    with online:
        _publish(online, tmp_path)
    assert server.runs[0].finished and online.run is None
    _publish(online, tmp_path)
    assert len(server.init_calls) == 2 and server.init_calls[1]["resume"] == "allow"
    assert server.init_calls[1]["id"] == "dagster-run-1234"


def test_stores_of_one_process_share_a_run_id(tmp_path: Path, server: FakeWandbServer) -> None:
    def make() -> WandbArtifactStore:
        return WandbArtifactStore(
            entity=ENTITY,
            project=PROJECT,
            base_dir=tmp_path,
            mode="online",
            run_id="same",
            sdk=server,
        )

    first, second = make(), make()
    _publish(first, tmp_path, name="a")
    _publish(second, tmp_path, name="b")
    assert len(server.init_calls) == 1 and first.run is second.run
    first.close()
    assert not server.runs[0].finished  # the other store still uses it
    second.close()
    assert server.runs[0].finished
    other = WandbArtifactStore(
        entity=ENTITY,
        project=PROJECT,
        base_dir=tmp_path,
        mode="online",
        run_id="other",
        sdk=server,
    )
    _publish(other, tmp_path, name="c")
    other.close()
    assert len(server.init_calls) == 2


def test_offline_stores_of_one_process_share_the_real_run(tmp_path: Path) -> None:
    base = tmp_path / "base"
    first = WandbArtifactStore(entity=ENTITY, project=PROJECT, base_dir=base, run_id="r-shared")
    second = WandbArtifactStore(entity=ENTITY, project=PROJECT, base_dir=base, run_id="r-shared")
    a = _publish(first, tmp_path, name="a")
    b = _publish(second, tmp_path, name="b")  # wandb alone would refuse: run id in use
    assert a.extra["wandb_offline_run_dir"] == b.extra["wandb_offline_run_dir"]
    first.close()
    second.close()
    records = _flushed_records(Path(a.extra["wandb_offline_run_dir"]))
    arts = [r.artifact.name for r in records if r.WhichOneof("record_type") == "artifact"]
    assert arts == ["a", "b"]


def test_product_code_has_no_test_hooks() -> None:
    import dagster_wandb_secure.stores.wandb_cache as cache_mod
    import dagster_wandb_secure.stores.wandb_run as run_mod
    import dagster_wandb_secure.stores.wandb_store as mod

    for module in (mod, run_mod, cache_mod):
        text = Path(module.__file__).read_text()
        for hook in ("PYTEST", "pytest", "TESTING"):
            assert hook not in text


# --- open_store ---------------------------------------------------------------------------------


def test_open_store_selects_the_store(tmp_path: Path, server: FakeWandbServer) -> None:
    local = open_store("local", local_dir=tmp_path / "store")
    assert isinstance(local, LocalArtifactStore) and local.root == tmp_path / "store"
    auto_local = open_store("auto", base_dir=tmp_path, api_key=None)
    assert isinstance(auto_local, LocalArtifactStore)
    assert auto_local.root == tmp_path / "wandb-secure" / "store"
    auto_wandb = open_store(
        "auto", base_dir=tmp_path, api_key=API_KEY, entity=ENTITY, project=PROJECT, sdk=server
    )
    assert isinstance(auto_wandb, WandbArtifactStore) and auto_wandb.offline
    explicit = open_store(
        "wandb",
        base_dir=tmp_path,
        local_dir=tmp_path / "mirror",
        entity=ENTITY,
        project=PROJECT,
        mode="online",
        run_id="r1",
        run_tags=["t"],
        cache_duration=timedelta(minutes=5),
        sdk=server,
    )
    assert isinstance(explicit, WandbArtifactStore)
    assert explicit.mode == "online" and explicit.local_dir == tmp_path / "mirror"
    assert explicit.run_tags == ("t", DAGSTER_WANDB_TAG)
    assert server.init_calls == []
    assert select_store_kind("auto", api_key="  ") == "local"
    with pytest.raises(ConfigurationError, match="unknown store 'cloud'"):
        open_store("cloud", base_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="entity"):
        open_store("wandb", base_dir=tmp_path, project=PROJECT, sdk=server)


def test_open_store_local_does_not_import_wandb(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from dagster_wandb_secure.stores import open_store\n"
        f"open_store('local', local_dir={str(tmp_path / 's')!r})\n"
        "print('wandb' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


_PARALLEL_PUBLISH = """
import sys, time
from pathlib import Path
from dagster_wandb_secure.stores.wandb_store import WandbArtifactStore
base, go, index = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
src = base / f"src-{index}"
src.write_bytes(index.encode())
store = WandbArtifactStore(entity="team", project="proj", base_dir=base, run_id="shared-run")
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
av = store.publish(entity="team", project="proj", name=f"asset-{index}", type="dataset",
                   files={"output.pickle": src})
store.close()
print(av.version, flush=True)
"""


def test_offline_processes_starting_the_same_run_at_once_do_not_share_a_run_folder(
    tmp_path: Path,
) -> None:
    """wandb names offline run folders by second and run id; the store serializes run starts
    so parallel Dagster steps of one run each get their own, intact, offline run folder."""
    base = tmp_path / "base"
    base.mkdir()
    go = tmp_path / "go"
    # independent step processes: not attached to a wandb service this test process may have
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PARALLEL_PUBLISH, str(base), str(go), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(3)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        go.touch()  # all three start their run within the same second
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            assert out.strip() == "0"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    run_dirs = sorted((base / "wandb").glob("offline-run-*-shared-run*"))
    assert len(run_dirs) == 3
    names = []
    for run_dir in run_dirs:
        records = _flushed_records(run_dir)
        arts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
        assert len(arts) == 1
        names.append(arts[0].name)
    assert sorted(names) == ["asset-0", "asset-1", "asset-2"]


# --- the writer's head scan reads only manifests --------------------------------------------------

BIG = 4 << 20  # a "large" payload: the scan must never fetch one


def _signed_files(tmp_path: Path, ks: Any, name: str, sequence: int) -> dict[str, bytes]:
    """The files of one genuine format-2 version of ``name`` (a big payload and its signed
    manifest), as another writer would have put them on the server."""
    from dagster_wandb_secure.core.manifest import MANIFEST_NAME, History, write_manifest

    payload = tmp_path / f"payload-{sequence}.bin"
    payload.write_bytes(bytes([sequence % 251]) * BIG)
    context = {"artifact": name, "type": "dataset", "project": f"{ENTITY}/{PROJECT}",
               "partition": None}
    manifest, _ = write_manifest({"output.bin": payload}, key_store=ks, context=context,
                                 history=History(sequence=sequence, parent=None), record=False)
    return {"output.bin": payload.read_bytes(), MANIFEST_NAME: manifest}


def test_online_head_scan_downloads_only_each_versions_manifest(
    tmp_path: Path, server: FakeWandbServer, online: WandbArtifactStore
) -> None:
    """Allocating the next sequence (every publish) reads every version's manifest, and only
    that: no version is materialized into the cache, no payload leaves the server."""
    import hashlib as _hashlib

    from dagster_wandb_secure.artifacts.history import allocate
    from dagster_wandb_secure.core.keys import KeyStore
    from dagster_wandb_secure.core.manifest import MANIFEST_NAME

    ks = KeyStore.open(tmp_path / "keys")
    ks.generate("ed25519")
    versions = [_signed_files(tmp_path, ks, "big", seq) for seq in (1, 3, 2)]
    for files in versions:
        server.put("big", files)
    server.put("big", {MANIFEST_NAME: b"planted junk"})  # a version that does not verify
    with allocate(online, ks, ENTITY, PROJECT, "big") as slot:
        assert slot.sequence == 4
        assert slot.parent == _hashlib.sha256(versions[1][MANIFEST_NAME]).hexdigest()
    assert server.count("download") == 0, "a version was downloaded whole"
    assert server.served == [MANIFEST_NAME] * 4
    cached = [p for p in online.base_dir.rglob("*") if p.is_file() and p.stat().st_size >= BIG]
    assert cached == []


def test_online_head_scan_refuses_an_oversized_manifest_unfetched(
    tmp_path: Path, server: FakeWandbServer, online: WandbArtifactStore
) -> None:
    """A manifest entry W&B announces above the cap is never downloaded (one typed error for
    that version); the others still count."""
    from dagster_wandb_secure.core.errors import ResourceLimitError
    from dagster_wandb_secure.core.keys import KeyStore
    from dagster_wandb_secure.core.manifest import MANIFEST_NAME
    from dagster_wandb_secure.stores.base import list_manifests

    ks = KeyStore.open(tmp_path / "keys")
    ks.generate("ed25519")
    server.put("big", _signed_files(tmp_path, ks, "big", 1))
    server.put("big", {MANIFEST_NAME: b"x" * 5000})
    items = list(list_manifests(online, entity=ENTITY, project=PROJECT, name="big",
                                relpath=MANIFEST_NAME, max_bytes=4096))
    assert [av.version for av, _ in items] == [0, 1]
    assert isinstance(items[0][1], bytes)
    assert isinstance(items[1][1], ResourceLimitError)
    assert server.served == [MANIFEST_NAME]
