"""Coverage-guided fuzzing of the verifier with atheris (long runs; not part of CI).

Targets (``--target``): ``envelope`` (unseal arbitrary bytes), ``manifest`` (verify a version
folder whose manifest is the input), ``keystore`` (load a key store whose keystore.json is the
input, then verify with it). Every input must end in the original object or a typed
``SecureArtifactError``; anything else is a crash atheris reports and saves.

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_envelope.py --target envelope fuzz/corpus-envelope -max_total_time=600

The seed corpus (valid envelopes, manifests and key stores for both algorithms) is written into
the corpus folder on the first run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports():
    from dagster_wandb_secure.core.envelope import seal, unseal
    from dagster_wandb_secure.core.errors import SecureArtifactError
    from dagster_wandb_secure.core.keys import KeyStore
    from dagster_wandb_secure.core.manifest import (
        MANIFEST_NAME,
        build_manifest,
        manifest_context,
        verify_manifest,
    )

CTX = {"artifact": "fuzz", "type": "dataset", "partition": None, "asset_key": "fuzz"}
ORIGINAL: Any = {"numbers": list(range(10)), "text": "fuzz"}
WORK = Path(tempfile.mkdtemp(prefix="dws-fuzz-"))
STORES = {alg: KeyStore.open(WORK / alg) for alg in ("ed25519", "hmac-sha256")}
for _alg, _ks in STORES.items():
    _ks.generate(_alg)
FOLDER = WORK / "version"
FOLDER.mkdir()
PAYLOAD = seal(ORIGINAL, key_store=STORES["ed25519"], context=CTX, record=False)
(FOLDER / "output.pickle").write_bytes(PAYLOAD)
FILES = {"output.pickle": FOLDER / "output.pickle"}


def seeds(target: str) -> list[bytes]:
    out: list[bytes] = []
    for ks in STORES.values():
        if target == "envelope":
            out.append(seal(ORIGINAL, key_store=ks, context=CTX, record=False))
            out.append(seal(ORIGINAL, key_store=ks, context=CTX, serializer="json", record=False))
        elif target == "manifest":
            out.append(seal(build_manifest(FILES), key_store=ks, serializer="json",
                            context=manifest_context(CTX), record=False))
        else:
            out.append((ks.path / "keystore.json").read_bytes())
    return out


def one_envelope(data: bytes) -> None:
    for ks in STORES.values():
        try:
            value = unseal(data, key_store=ks, expected_context=CTX)
        except SecureArtifactError:
            continue
        if value != ORIGINAL:
            raise AssertionError(f"unsealed something else: {value!r}")


def one_manifest(data: bytes) -> None:
    path = WORK / MANIFEST_NAME
    path.write_bytes(data)
    try:
        verify_manifest({**FILES, MANIFEST_NAME: path}, key_store=STORES["ed25519"],
                        expected_context=CTX)
    except SecureArtifactError:
        pass


def one_keystore(data: bytes) -> None:
    folder = WORK / "ks-under-test"
    src = STORES["ed25519"].path
    if not folder.exists():
        import shutil

        shutil.copytree(src, folder)
    (folder / "keystore.json").write_bytes(data)
    try:
        ks = KeyStore.open(folder, create=False)
        ks.records()
        if unseal(PAYLOAD, key_store=ks, expected_context=CTX) != ORIGINAL:
            raise AssertionError("a corrupted key store verified something else")
    except SecureArtifactError:
        pass


TARGETS = {"envelope": one_envelope, "manifest": one_manifest, "keystore": one_keystore}


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--target", choices=sorted(TARGETS), default="envelope")
    args, rest = parser.parse_known_args()
    corpus = next((Path(a) for a in rest if not a.startswith("-")), None)
    if corpus is not None:
        corpus.mkdir(parents=True, exist_ok=True)
        if not any(corpus.iterdir()):
            for i, seed in enumerate(seeds(args.target)):
                (corpus / f"seed-{i}").write_bytes(seed)
    os.environ.setdefault("WANDB_MODE", "offline")
    atheris.Setup([sys.argv[0], *rest], TARGETS[args.target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
