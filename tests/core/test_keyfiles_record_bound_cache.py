"""A loaded key is cached per key id and key file, and bound to the record it was checked
against (core/keyfiles.py). Before, the cache was keyed by the key id and the file's stat
signature only, and the record's fingerprint was checked when the file was loaded: after
keystore.json changed a key's fingerprint (its public or private file untouched), a long-lived
process kept verifying with the old key, where a newly opened store refused the mismatch
(found by session 6's red team)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dagster_wandb_secure.core.errors import KeyStoreError
from dagster_wandb_secure.core.keys import KeyStore

MSG = b"record-bound key cache"


def _set_fingerprint(root: Path, kid: str, fingerprint: str) -> None:
    """keystore.json rewritten (a new file put in place), this key's fingerprint changed."""
    path = root / "keystore.json"
    doc = json.loads(path.read_bytes())
    for record in doc["keys"]:
        if record["kid"] == kid:
            record["fingerprint"] = fingerprint
    new = root / "keystore.json.new"
    new.write_text(json.dumps(doc))
    new.chmod(path.stat().st_mode & 0o777)
    os.replace(new, path)


@pytest.mark.parametrize("alg", ["ed25519", "hmac-sha256"])
def test_a_changed_record_fingerprint_is_checked_against_the_cached_key(
    tmp_path: Path, alg: str
) -> None:
    writer = KeyStore.open(tmp_path / "ks")
    kid = writer.generate(alg)
    signature = writer.signer().sign(MSG)
    reader = KeyStore.open(tmp_path / "ks")

    def verify(store: KeyStore) -> object:
        return store.verify(
            kid=kid, alg=alg, message=MSG, signature=signature, signed_at=datetime.now(UTC)
        )

    assert verify(reader).kid == kid  # the reader has loaded (and cached) the key
    _set_fingerprint(tmp_path / "ks", kid, "ab" * 32)
    with pytest.raises(KeyStoreError, match="fingerprint"):
        verify(KeyStore.open(tmp_path / "ks"))  # a new store refuses the mismatch ...
    with pytest.raises(KeyStoreError, match="fingerprint"):
        verify(reader)  # ... and so does the long-lived one
