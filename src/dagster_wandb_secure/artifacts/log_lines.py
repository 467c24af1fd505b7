"""The one-line event-log statements of a signed write and a verified read."""

from __future__ import annotations

from typing import Any

__all__ = ["signature_line", "signature_metadata"]

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
