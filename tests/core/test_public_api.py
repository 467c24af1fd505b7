"""The deliberate public API: the core names import from the package root without Dagster or
wandb, every advertised name resolves, and upstream's module paths exist."""

from __future__ import annotations

import json
import subprocess
import sys

import dagster_wandb_secure

CORE_NAMES = (
    "KeyStore", "KeyRecord", "KeyStatus", "Policy", "EnvelopeHeader", "seal", "seal_to", "unseal",
    "unseal_from", "verify_path", "read_header_unverified", "MANIFEST_NAME", "write_manifest",
    "verify_manifest", "SecureArtifactError", "SignatureVerificationError", "RollbackError",
)


def _fresh(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    ).stdout


def test_core_api_imports_without_dagster_or_wandb() -> None:
    out = _fresh(
        "import json, sys\n"
        f"from dagster_wandb_secure import {', '.join(CORE_NAMES)}\n"
        "print(json.dumps(sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('dagster', 'wandb'))))\n"
    )
    assert json.loads(out) == []


def test_core_api_round_trip(tmp_path) -> None:
    from dagster_wandb_secure import KeyStore, seal, unseal

    ks = KeyStore.open(tmp_path / "keys")
    ks.generate("ed25519")
    assert unseal(seal({"a": 1}, key_store=ks, serializer="json"), key_store=ks) == {"a": 1}


def test_every_advertised_name_resolves() -> None:
    for name in dagster_wandb_secure.__all__:
        assert getattr(dagster_wandb_secure, name) is not None, name
    assert set(CORE_NAMES) <= set(dagster_wandb_secure.__all__)


def test_upstream_module_paths_import() -> None:
    out = _fresh(
        "import dagster_wandb_secure.launch.ops as ops, dagster_wandb_secure.resources as r,"
        " dagster_wandb_secure.io_manager as io\n"
        "print(callable(ops.run_launch_agent), callable(ops.run_launch_job),"
        " hasattr(r, 'wandb_resource'), hasattr(io, 'wandb_artifacts_io_manager'))\n"
    )
    assert out.split() == ["True"] * 4


def test_core_imports_no_outer_layer() -> None:
    """Dependencies point one way: every core module imports without the stores, the artifact
    engine, the maintenance operations or the Dagster face."""
    out = _fresh(
        "import json, pkgutil, importlib, sys\n"
        "import dagster_wandb_secure.core as core\n"
        "for m in pkgutil.walk_packages(core.__path__, 'dagster_wandb_secure.core.'):\n"
        "    importlib.import_module(m.name)\n"
        "outer = ('stores', 'artifacts', 'maintenance', 'cli', 'io_manager', 'resources')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('dagster_wandb_secure.')"
        " and m.split('.')[1] in outer)))\n"
    )
    assert json.loads(out) == []
