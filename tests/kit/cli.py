"""Builders for CLI tests: a key store, a local store, and versions published through the
library's own APIs (seal_to + write_manifest + LocalArtifactStore.publish + ledger rows)."""

from __future__ import annotations

import json
import os
import pickle
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from dagster_wandb_secure.cli import app
from dagster_wandb_secure.core.envelope import seal_to
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.manifest import MANIFEST_NAME, History, write_manifest
from dagster_wandb_secure.stores.base import ArtifactVersion
from dagster_wandb_secure.stores.local import LocalArtifactStore

ENTITY, PROJECT = "team", "proj"


@dataclass
class Env:
    root: Path
    keys: Path
    store_dir: Path
    ks: KeyStore
    store: LocalArtifactStore

    def publish(
        self,
        name: str,
        obj: Any = None,
        *,
        type_: str = "dataset",
        key_store: KeyStore | None = None,
        context: Mapping[str, str | None] | None = None,
        record: bool = True,
        extra_files: Mapping[str, bytes] | None = None,
    ) -> ArtifactVersion:
        ks = key_store or self.ks
        staging = self.root / "staging" / f"{name}-{os.urandom(4).hex()}"
        staging.mkdir(parents=True)
        ctx = dict(context) if context is not None else {
            "artifact": name, "type": type_, "partition": None, "asset_key": name,
            "project": f"{ENTITY}/{PROJECT}",
        }
        files: dict[str, Path] = {}
        rows = []
        h = seal_to(
            staging / "output.pickle", obj if obj is not None else {"name": name},
            key_store=ks, serializer="pickle", context=ctx, record=record,
        )
        files["output.pickle"] = staging / "output.pickle"
        if h.ledger_row is not None:
            rows.append(h.ledger_row)
        for rel, data in (extra_files or {}).items():
            (staging / rel).write_bytes(data)
            files[rel] = staging / rel
        # the current manifest format: a signed place in the artifact's history
        sequence = 1 + sum(1 for _ in self.store.list_versions(name=name))
        history = History(sequence=sequence, parent=None, aliases=("latest",))
        manifest, mh = write_manifest(
            files, key_store=ks, context=ctx, record=record, history=history
        )
        (staging / MANIFEST_NAME).write_bytes(manifest)
        files[MANIFEST_NAME] = staging / MANIFEST_NAME
        av = self.store.publish(
            entity=ENTITY, project=PROJECT, name=name, type=type_, files=files
        )
        if record:
            for row in ks.ledger.find_digest(mh.payload_sha256):
                if row.key_id == mh.kid and row.artifact_version is None:
                    rows.append(row.id)
            for row in rows:
                ks.ledger.attach_version(row, artifact_version=av.version_label,
                                         aliases=av.aliases)
        return av

    def publish_legacy(self, name: str, data: bytes, *, suffix: str = "pickle") -> ArtifactVersion:
        staging = self.root / "staging" / f"{name}-{os.urandom(4).hex()}"
        staging.mkdir(parents=True)
        (staging / f"output.{suffix}").write_bytes(data)
        return self.store.publish(
            entity=ENTITY, project=PROJECT, name=name, type="dataset",
            files={f"output.{suffix}": staging / f"output.{suffix}"},
        )

    def path_of(self, av: ArtifactVersion, rel: str) -> Path:
        return self.store.file_path(av, rel)


def make_writable(path: Path) -> None:
    path.chmod(path.stat().st_mode | stat.S_IWUSR)


def append_byte(path: Path) -> None:
    make_writable(path)
    with open(path, "ab") as fh:
        fh.write(b"\x00")


def flip_last_byte(path: Path) -> None:
    make_writable(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def run(runner: CliRunner, *args: str, input: str | None = None) -> Any:
    result = runner.invoke(app, list(args), input=input, catch_exceptions=False)
    return result


def run_json(runner: CliRunner, *args: str) -> tuple[int, dict[str, Any]]:
    result = run(runner, *args, "--json")
    return result.exit_code, json.loads(result.stdout)


def build_every_status(env: Env) -> dict[str, str]:
    """One artifact of each audit status. Returns {artifact name: expected status of its
    newest-or-aliased version} (see the tests for the exact versions)."""
    ks = env.ks
    k1 = ks.primary().kid
    env.publish("valid")
    tampered = env.publish("tampered")
    append_byte(env.path_of(tampered, "output.pickle"))
    env.publish_legacy("unsigned", pickle.dumps({"legacy": 1}))
    other = KeyStore.open(env.root / "other-keys")
    other.generate("ed25519")
    env.publish("unknown-key", key_store=other)
    env.publish("context-mismatch", context={"artifact": "somewhere-else", "type": "dataset",
                                                    "project": f"{ENTITY}/{PROJECT}"})
    env.publish("rolled-back")
    env.publish("rolled-back")
    env.store.move_alias(ENTITY, PROJECT, "rolled-back", "latest", 0)
    env.publish("missing-from-ledger", record=False)
    # adopted: a legacy pickle re-published signed by `adopt`
    from dagster_wandb_secure.maintenance.adopt import adopt_version, find_candidates

    env.publish_legacy("adopted", pickle.dumps([1, 2, 3]))
    (cand,) = find_candidates(env.store, name="adopted")
    adopt_version(env.store, ks, cand)
    # revoked: signed by k2, then k2 revoked
    k2 = ks.generate("ed25519")
    ks.promote(k2)
    env.publish("revoked-key")
    # expired: signed by k3, which is then rotated out with no grace period
    k3 = ks.generate("ed25519")
    ks.promote(k3)
    env.publish("expired-key")
    ks.rotate(grace=timedelta(0))
    ks.revoke(k2, "laptop stolen")
    assert ks.get(k1).status.value == "verify-only"
    return {
        "valid": "valid",
        "tampered": "tampered",
        "unsigned": "unsigned",
        "unknown-key": "unknown-key",
        "context-mismatch": "context-mismatch",
        "rolled-back": "rolled-back",
        "missing-from-ledger": "missing-from-ledger",
        "adopted": "adopted",
        "revoked-key": "revoked-key",
        "expired-key": "expired-key",
    }
