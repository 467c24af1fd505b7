"""The one-line event-log statements of a signed write and a verified read."""

from __future__ import annotations

from typing import Any

__all__ = ["signature_line", "signature_metadata"]


def signature_line(action: str, label: str, key_id: str, algorithm: str, seq: Any = None) -> str:
    """``verified my_model:v3 (seq 7) signed by KID (ed25519)`` / ``signed my_model:v4 ...``."""
    seq_part = f" (seq {seq})" if seq is not None else ""
    if action == "signed":
        return f"signed {label}{seq_part} with {key_id} ({algorithm})"
    return f"{action} {label}{seq_part} signed by {key_id} ({algorithm})"


def signature_metadata(label: str, key_id: str, algorithm: str, seq: Any = None) -> dict[str, Any]:
    """The same facts as input metadata (shown on the step in the Dagster UI)."""
    meta: dict[str, Any] = {
        "signature_status": signature_line("verified", label, key_id, algorithm, seq),
        "wandb_artifact": label,
        "signing_key_id": key_id,
        "signature_algorithm": algorithm,
    }
    if seq is not None:
        meta["signed_sequence"] = seq
    return meta
