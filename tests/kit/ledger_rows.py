"""Ledger signature rows for tests: one factory for every ledger test (SQLite, PostgreSQL,
layered, roles, faults)."""

from __future__ import annotations

import hashlib
from typing import Any


def digest(n: int | str) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def entry(n: int, artifact: str = "model", **kw: Any) -> dict[str, Any]:
    """The keyword arguments of ``record_signature`` for row ``n`` (digest = sha256 of ``n``)."""
    base: dict[str, Any] = {
        "key_id": "0123456789abcdef",
        "alg": "ed25519",
        "digest": digest(n),
        "length": n,
        "context": {"artifact": artifact, "type": "dataset", "partition": None, "asset_key": "a/b"},
        "serializer": "pickle",
        "signed_at": "2024-05-01T12:00:00.000000Z",
    }
    base.update(kw)
    return base
