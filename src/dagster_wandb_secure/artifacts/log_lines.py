"""The one-line event-log statements of a signed write and a verified read."""

from __future__ import annotations

from typing import Any

__all__ = ["add_loaded_input_metadata", "signature_line", "signature_metadata"]

SHORT_DIGEST = 12  # hex characters of a manifest digest shown in a log line


def signature_line(
    action: str,
    label: str,
    key_id: str,
    algorithm: str,
    seq: Any = None,
    manifest_digest: str | None = None,
) -> str:
    """``signed my_model:v4 (seq 7) with KID (ed25519)`` /
    ``verified my_model:v4 (signed seq 7, signed manifest 0123456789ab) signed by KID (ed25519)``:
    on a read both values come from the verified manifest, and say so."""
    if action == "signed":
        seq_part = f" (seq {seq})" if seq is not None else ""
        return f"signed {label}{seq_part} with {key_id} ({algorithm})"
    facts = []
    if seq is not None:
        facts.append(f"signed seq {seq}")
    if manifest_digest:
        facts.append(f"signed manifest {manifest_digest[:SHORT_DIGEST]}")
    seq_part = f" ({', '.join(facts)})" if facts else ""
    return f"{action} {label}{seq_part} signed by {key_id} ({algorithm})"


def signature_metadata(
    label: str,
    key_id: str,
    algorithm: str,
    seq: Any = None,
    manifest_digest: str | None = None,
) -> dict[str, Any]:
    """The same facts as input metadata (shown on the step in the Dagster UI); the history
    facts taken from the verified manifest are the ``signed_*`` entries."""
    meta: dict[str, Any] = {
        "signature_status": signature_line(
            "verified", label, key_id, algorithm, seq, manifest_digest
        ),
        "wandb_artifact": label,
        "signing_key_id": key_id,
        "signature_algorithm": algorithm,
    }
    if seq is not None:
        meta["signed_sequence"] = seq
    if manifest_digest:
        meta["signed_manifest_digest"] = manifest_digest
    return meta


def add_loaded_input_metadata(context: Any, metadata: dict[str, Any], description: str) -> None:
    """``metadata`` on the input's LOADED_INPUT event (the step in the Dagster UI).

    Dagster's ``add_input_metadata`` also logs an ASSET_OBSERVATION of the upstream asset for
    every asset input: one more event-log write per read (~1.5 ms, the costliest part of a
    small read; issue 16) repeating the same facts. Where the input context keeps its LOADED_INPUT
    metadata as this Dagster release does (a dict it hands to that event), the facts go there
    alone; otherwise (another release, an op input) the public call is made. Nothing a check
    depends on: these are the reader's own statements of what it verified."""
    pending = getattr(context, "_user_generated_metadata", None)
    if isinstance(pending, dict) and getattr(context, "has_asset_key", False):
        from dagster._core.definitions.metadata import normalize_metadata

        context._user_generated_metadata = {**pending, **normalize_metadata(metadata)}
        return
    context.add_input_metadata(metadata, description=description)
