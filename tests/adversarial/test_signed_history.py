"""Signed version history (issue 12 items 1-5, issue 14 empty artifacts): rollback, replay, mark
poisoning, resign and audit rest only on signed manifests; user code gets only signed metadata.

Every scenario runs through ``dagster.materialize`` with the real IO manager, over the local
store and the W&B store offline (its mirror is the local store folder, which is what the
registry writer edits), for a reader that shares the writer's ledger and one with its own.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagster import AssetIn, AssetKey, SourceAsset, asset, materialize
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.io_manager import WandbArtifactsIOManager
from dagster_wandb_secure.stores.local import LocalArtifactStore
from kit.dagster_runs import failure_text

E, P = "team", "proj"
SRC = str(Path(__file__).resolve().parents[2] / "src")


class Env:
    def __init__(self, root: Path, store: str, ledger: str) -> None:
        self.root, self.store_kind, self.ledger = root, store, ledger
        self.keys = root / "keys"
        self.store_dir = root / "store"
        self.ks = KeyStore.open(self.keys)
        self.kid = self.ks.generate("ed25519")
        self.kid = getattr(self.kid, "kid", self.kid)
        self.reader_keys = self.keys
        if ledger == "own":
            self.reader_keys = root / "reader-keys"
            KeyStore.open(self.reader_keys).import_public(self.ks.export_public(self.kid))

    def iom(self, keys: Path | None = None) -> WandbArtifactsIOManager:
        return WandbArtifactsIOManager(
            key_store=str(keys or self.keys), store=self.store_kind,
            local_store_dir=str(self.store_dir), base_dir=str(self.root / "base"),
            entity=E, project=P,
        )

    def trust_new_key(self, kid: str) -> None:
        if self.ledger == "own":
            KeyStore.open(self.reader_keys).import_public(self.ks.export_public(kid))

    @property
    def store(self) -> LocalArtifactStore:
        # one store object per test (each opens SQLite connections that live as long as it)
        if "_store" not in self.__dict__:
            self.__dict__["_store"] = LocalArtifactStore(self.store_dir)
        return self.__dict__["_store"]  # type: ignore[no-any-return]

    def close(self) -> None:
        self.ks.ledger.close()
        self.__dict__.pop("_store", None)

    def write(self, name: str, value: Any) -> None:
        @asset(name=name, io_manager_key="m")
        def producer() -> Any:
            return value

        assert materialize([producer], resources={"m": self.iom()}).success

    def read(self, name: str, **conf: Any) -> tuple[bool, Any, str]:
        """(success, value user code received or None, failure text)."""
        seen: dict[str, Any] = {}
        meta = {"wandb_artifact_configuration": conf} if conf else None

        @asset(ins={"up": AssetIn(key=AssetKey(name), input_manager_key="m", metadata=meta)})
        def reader(up: Any) -> None:
            seen["value"] = up

        result = materialize([SourceAsset(key=AssetKey(name), io_manager_key="m"), reader],
                             resources={"m": self.iom(self.reader_keys)}, selection=[reader],
                             raise_on_error=False)
        text = failure_text(result) if not result.success else ""
        return result.success, seen.get("value"), text

    def replay(self, name: str, version: str) -> None:
        """The registry writer copies a version's signed files in as a NEW version."""
        av = self.store.resolve(E, P, name, version=version)
        self.store.publish(entity=E, project=P, name=name, type=av.type,
                           files={rel: av.root / rel for rel in av.files})

    def cli(self, *args: str, store: bool = True) -> subprocess.CompletedProcess[str]:
        extra = ["--store", self.store_kind, "--store-dir", str(self.store_dir)]
        if not store:
            extra = []
        elif self.store_kind == "wandb":
            extra += ["--entity", E, "--project", P]
        return subprocess.run(
            [sys.executable, "-m", "dagster_wandb_secure.cli", *args, "-k", str(self.keys),
             *extra], capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": SRC},
        )


@pytest.fixture(autouse=True)
def _release_connections(tmp_path: Path) -> Iterator[None]:
    """Each materialize leaves SQLite connections (store index, ledger) open for the process's
    life; close the ones into this test's folder afterwards, so this module's many runs do not
    exhaust file descriptors for later tests (select() fails above 1024); key stores likewise
    keep a descriptor on keystore.json."""
    yield
    import gc

    gc.collect()
    root = str(tmp_path.parent)
    for obj in gc.get_objects():
        if isinstance(obj, KeyStore) and str(obj.path).startswith(root):
            obj.close()
        elif isinstance(obj, sqlite3.Connection):
            try:
                files = [row[2] for row in obj.execute("PRAGMA database_list")]
                if any(f and f.startswith(root) for f in files):
                    obj.close()
            except (sqlite3.Error, ValueError):
                continue


@pytest.fixture(params=[("local", "shared"), ("local", "own"), ("wandb", "shared"),
                        ("wandb", "own")], ids=lambda p: "-".join(p))
def env(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Env]:
    monkeypatch.chdir(tmp_path)
    store, ledger = request.param
    made = Env(tmp_path, store, ledger)
    yield made
    made.close()


def test_replay_as_a_new_version_is_refused(env: Env) -> None:
    """Item 1: v0's signed files copied in as v2 never reach user code as latest."""
    env.write("victim", 1)
    env.write("victim", 2)
    assert env.read("victim")[:2] == (True, 2)
    env.replay("victim", "v0")
    ok, value, text = env.read("victim")
    assert not ok and value is None
    assert "RollbackError" in text and "victim:v2" in text and "rolled-back" in text
    assert env.read("victim", version="v1")[:2] == (True, 2)  # pinned reads stay allowed


def test_replay_under_another_alias_is_refused(env: Env) -> None:
    """A custom alias never seen by the reader, moved to a re-published copy of old content."""
    env.write("victim", 1)
    env.write("victim", 2)
    assert env.read("victim", version="v0")[:2] == (True, 1)
    assert env.read("victim")[:2] == (True, 2)
    env.replay("victim", "v0")
    env.store.move_alias(E, P, "victim", "prod", "v2")
    ok, value, text = env.read("victim", alias="prod")
    assert not ok and value is None and "replayed" in text


def test_marks_cannot_be_poisoned(env: Env) -> None:
    """Item 2: a planted, then removed, version (and a huge number in the old marks) never
    makes genuine new versions look like rollbacks."""
    env.write("victim", 1)
    env.replay("victim", "v0")  # the attacker's "v10^12": same signed content, higher number
    assert env.read("victim")[:2] == (True, 1)
    env.store.move_alias(E, P, "victim", "latest", "v0")  # ... then removed
    reader = KeyStore.open(env.reader_keys)
    reader.ledger.note_seen("victim", "latest", 10**12)
    reader.ledger.close()
    assert env.read("victim")[:2] == (True, 1)
    env.write("victim", 2)
    assert env.read("victim")[:2] == (True, 2)


def test_resign_refuses_to_launder_a_rollback(env: Env) -> None:
    """Item 3: latest moved back, then resign --from the old key: refused, nothing published."""
    env.write("victim", 1)
    env.write("victim", 2)
    assert env.read("victim")[:2] == (True, 2)
    env.store.move_alias(E, P, "victim", "latest", "v0")
    assert env.cli("keys", "rotate", store=False).returncode == 0
    before = len(list(env.store.list_versions(name="victim")))
    result = env.cli("resign", "--from", env.kid)
    assert result.returncode != 0
    assert "RollbackError" in result.stdout + result.stderr
    assert len(list(env.store.list_versions(name="victim"))) == before


def test_resign_after_rotation_keeps_latest_on_the_newest_content(env: Env) -> None:
    """Item 3 without an attacker: every alias stays on (a copy of) what it held."""
    env.write("victim", 1)
    env.write("victim", 2)
    assert env.read("victim")[:2] == (True, 2)
    assert env.cli("keys", "rotate", store=False).returncode == 0
    env.trust_new_key(KeyStore.open(env.keys).primary().kid)
    env.write("victim", 3)
    assert env.read("victim")[:2] == (True, 3)
    result = env.cli("resign", "--from", env.kid)
    assert result.returncode == 0, result.stdout + result.stderr
    assert env.read("victim")[:2] == (True, 3)
    audit = env.cli("audit", "--json")
    assert audit.returncode == 0, audit.stdout


def test_audit_reports_the_replay(env: Env) -> None:
    """Item 4: audit (fast and deep) flags the replayed version and exits non-zero."""
    env.write("victim", 1)
    env.write("victim", 2)
    env.replay("victim", "v0")
    for deep in ([], ["--deep"]):
        result = env.cli("audit", "--json", *deep)
        assert result.returncode == 1
        doc = json.loads(result.stdout)
        status = {v["version"]: v["status"] for v in doc["versions"]}
        assert status["v2"] in ("replayed", "rolled-back") and status["v1"] == "valid"


def _index_metadata(store_dir: Path, name: str, change: dict[str, Any]) -> None:
    db = sqlite3.connect(store_dir / "index.sqlite3")
    rows = db.execute("SELECT v.artifact_id, v.number, v.metadata FROM versions v JOIN "
                      "artifacts a ON a.id = v.artifact_id WHERE a.name = ?", (name,)).fetchall()
    assert rows
    for art, number, meta in rows:
        db.execute("UPDATE versions SET metadata = ?, description = ? WHERE artifact_id = ? "
                   "AND number = ?", (json.dumps({**json.loads(meta), **change}), "edited",
                                      art, number))
    db.commit()
    db.close()


def test_metadata_user_code_receives_is_signed(env: Env) -> None:
    """Item 5: an edited index row changes nothing the verified view hands to user code."""
    import wandb

    @asset(name="model", io_manager_key="m")
    def model() -> Any:
        art = wandb.Artifact("model", "model", description="the real one",
                             metadata={"threshold": 0.5})
        path = env.root / "weights.bin"
        path.write_bytes(b"w" * 10)
        art.add_file(str(path))
        return art

    assert materialize([model], resources={"m": env.iom()}).success
    _index_metadata(env.store_dir, "model", {"threshold": 0.0})
    ok, view, _ = env.read("model")
    assert ok
    assert view.metadata["threshold"] == 0.5 and view.description == "the real one"
    assert "latest" in view.aliases and view.sequence == 1


def test_empty_artifact_round_trips_signed(env: Env) -> None:
    """Issue 14: an empty wandb.Artifact is signed as explicitly empty and reads back empty; a
    version without a manifest stays refused."""
    import wandb

    @asset(name="registry_model", io_manager_key="m")
    def registry_model() -> Any:
        return wandb.Artifact("registry_model", "model", metadata={"stage": "x"})

    assert materialize([registry_model], resources={"m": env.iom()}).success
    ok, view, _ = env.read("registry_model")
    assert ok and view.files() == [] and view.metadata["stage"] == "x"
    empty = env.root / "blank"
    empty.write_bytes(b"")
    env.store.publish(entity=E, project=P, name="registry_model", type="model",
                      files={"blank": empty})
    ok, value, text = env.read("registry_model", version="v1")
    assert not ok and value is None and "UnsignedPayloadError" in text


# --- the invariant, on random operation sequences ---------------------------------------------

OPS = st.lists(st.sampled_from(["publish", "move", "delete", "republish_old", "resign"]),
               min_size=3, max_size=7)


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=OPS, pick=st.randoms(use_true_random=False))
def test_accepted_value_never_goes_backwards(tmp_path_factory: Any, ops: list[str],
                                             pick: Any) -> None:
    """publish / move alias / delete (move latest away) / re-publish old / resign, against a
    reader with its own ledger: every accepted value is >= the last accepted one in signed
    order (values are published increasing), and every refusal is a typed RollbackError."""
    from dagster_wandb_secure.artifacts.session import Session  # noqa: F401 (import check)
    from dagster_wandb_secure.maintenance.resign import resign_from

    root = tmp_path_factory.mktemp("hyp")
    os.chdir(root)
    env = Env(root, "local", "own")
    counter = 1
    env.write("h", counter)
    last_accepted = 0
    for op in ops:
        versions = sorted(v.version for v in env.store.list_versions(name="h"))
        if op == "publish":
            counter += 1
            env.write("h", counter)
        elif op == "move":
            env.store.move_alias(E, P, "h", "latest", f"v{pick.choice(versions)}")
        elif op == "delete":
            env.store.move_alias(E, P, "h", "latest", f"v{versions[max(0, len(versions) - 2)]}")
        elif op == "republish_old":
            env.replay("h", f"v{pick.choice(versions)}")
        elif op == "resign":
            ks = env.ks
            old = ks.primary().kid
            ks.rotate("ed25519")
            if ks.primary().kid != old:
                env.trust_new_key(ks.primary().kid)
                try:
                    resign_from(env.store, ks, old)
                except Exception as exc:  # noqa: BLE001 - checked to be the typed refusal
                    assert type(exc).__name__ == "RollbackError"
        ok, value, text = env.read("h")
        if ok:
            assert value >= last_accepted, (ops, value, last_accepted)
            last_accepted = value
        else:
            assert "RollbackError" in text, text
    env.close()
    import gc

    gc.collect()
