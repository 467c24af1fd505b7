"""The strict header path as a differential oracle for the template fast path."""

from __future__ import annotations

from typing import Any

from dagster_wandb_secure.core import canonical
from dagster_wandb_secure.core.envelope_format import check_schema
from dagster_wandb_secure.core.errors import MalformedEnvelopeError


def strict_fields(header: bytes) -> dict[str, Any] | None:
    """What the full path admits: the decoded fields, or None when it refuses."""
    try:
        fields = canonical.decode(header)
    except canonical.CanonicalJSONError:
        return None
    if not isinstance(fields, dict):
        return None
    try:
        check_schema(fields, None)
    except MalformedEnvelopeError:
        return None
    return fields
