"""dagster-wandb-secure: a drop-in dagster-wandb whose artifacts are signed and verified.

The Dagster-facing names are imported lazily so that ``import dagster_wandb_secure.core`` never
pulls in Dagster or wandb.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it. The Dagster face first; then the Dagster- and
# W&B-free core API (importing it never imports Dagster or wandb; a test proves it).
_DAGSTER = {
    "wandb_resource": "dagster_wandb_secure.resources",
    "WandbResource": "dagster_wandb_secure.resources",
    "wandb_artifacts_io_manager": "dagster_wandb_secure.io_manager",
    "WandbArtifactsIOManager": "dagster_wandb_secure.io_manager",
    "WandbArtifactsIOManagerError": "dagster_wandb_secure.io_manager",
    "SerializationModule": "dagster_wandb_secure.types",
    "WandbArtifactConfiguration": "dagster_wandb_secure.types",
    "build_signature_asset_checks": "dagster_wandb_secure.asset_checks",
    "run_launch_agent": "dagster_wandb_secure.launch.ops",
    "run_launch_job": "dagster_wandb_secure.launch.ops",
}
_CORE = {
    "KeyStore": "dagster_wandb_secure.core.keys",
    "KeyRecord": "dagster_wandb_secure.core.keys",
    "KeyStatus": "dagster_wandb_secure.core.keys",
    "Policy": "dagster_wandb_secure.core.policy",
    "EnvelopeHeader": "dagster_wandb_secure.core.envelope",
    "seal": "dagster_wandb_secure.core.envelope",
    "seal_to": "dagster_wandb_secure.core.envelope",
    "unseal": "dagster_wandb_secure.core.envelope",
    "unseal_from": "dagster_wandb_secure.core.envelope",
    "verify_path": "dagster_wandb_secure.core.envelope",
    "read_header_unverified": "dagster_wandb_secure.core.envelope",
    "MANIFEST_NAME": "dagster_wandb_secure.core.manifest",
    "write_manifest": "dagster_wandb_secure.core.manifest",
    "verify_manifest": "dagster_wandb_secure.core.manifest",
    "SecureArtifactError": "dagster_wandb_secure.core.errors",
    "SignatureVerificationError": "dagster_wandb_secure.core.errors",
    "TamperedPayloadError": "dagster_wandb_secure.core.errors",
    "UnknownKeyError": "dagster_wandb_secure.core.errors",
    "RevokedKeyError": "dagster_wandb_secure.core.errors",
    "ExpiredKeyError": "dagster_wandb_secure.core.errors",
    "AlgorithmMismatchError": "dagster_wandb_secure.core.errors",
    "ContextMismatchError": "dagster_wandb_secure.core.errors",
    "MalformedEnvelopeError": "dagster_wandb_secure.core.errors",
    "UnsignedPayloadError": "dagster_wandb_secure.core.errors",
    "SerializerNotAllowedError": "dagster_wandb_secure.core.errors",
    "RollbackError": "dagster_wandb_secure.core.errors",
    "ResourceLimitError": "dagster_wandb_secure.core.errors",
    "KeyStoreError": "dagster_wandb_secure.core.errors",
    "KeyPermissionError": "dagster_wandb_secure.core.errors",
    "WeakKeyError": "dagster_wandb_secure.core.errors",
    "NoSigningKeyError": "dagster_wandb_secure.core.errors",
    "SerializationError": "dagster_wandb_secure.core.errors",
    "SerializerUnavailableError": "dagster_wandb_secure.core.errors",
    "UnsafePathError": "dagster_wandb_secure.core.errors",
    "ConfigurationError": "dagster_wandb_secure.core.errors",
}
_LAZY = {**_DAGSTER, **_CORE}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dagster_wandb_secure' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
