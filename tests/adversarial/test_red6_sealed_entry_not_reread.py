"""Red team (session 6): the manifest describes a payload this process sealed from the header
it signed, not from the staged file read back. A staged envelope swapped, before the manifest
is signed, for another envelope validly signed by the same key (same size, another payload:
an older version's, say) is not signed into the manifest: the manifest names the payload that
was sealed, so the store's index hint and every reader's digest check refuse the swapped
file. (Reading the file back signed whatever the swap left there.)"""

from __future__ import annotations

import shutil
from pathlib import Path

from dagster_wandb_secure.artifacts.publishing import add_signed_manifest
from dagster_wandb_secure.core.envelope import seal_to
from dagster_wandb_secure.core.keys import KeyStore

CTX = {"artifact": "red6", "type": "dataset"}


def test_a_swapped_staged_envelope_is_not_what_the_manifest_names(tmp_path: Path) -> None:
    ks = KeyStore.open(tmp_path / "keys")
    ks.generate("ed25519")
    staging = tmp_path / "staging"
    staging.mkdir()
    ours = seal_to(staging / "output.json", {"v": "mine"}, key_store=ks, serializer="json",
                   context=CTX, record=False)
    theirs_path = tmp_path / "older.json"
    theirs = seal_to(theirs_path, {"v": "old!"}, key_store=ks, serializer="json",
                     context=CTX, record=False)
    assert theirs_path.stat().st_size == (staging / "output.json").stat().st_size
    assert theirs.payload_digest != ours.payload_digest
    shutil.copyfile(theirs_path, staging / "output.json")  # the swap, before the manifest
    files = {"output.json": staging / "output.json"}
    signed = add_signed_manifest(
        ks, staging=staging, files=files, context=CTX, rows=[],
        sealed={"output.json": ours},
    )
    assert signed.digests["output.json"].digest == ours.payload_digest
    assert signed.digests["output.json"].digest != theirs.payload_digest
