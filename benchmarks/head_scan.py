"""``python -m benchmarks.head_scan [--versions N]``: the writer's head scan (``store_head``,
run by every publish) over one artifact with N versions in the local store, in milliseconds.

Rows: ``before`` is the scan as it was (``list_versions``, then per version ``file_path`` and
``read_manifest``: paths resolved and every signature checked); ``cold`` is ``store_head`` for a
writer whose ledger has recorded none of the versions (a fresh pod: every manifest verified);
``warm`` is ``store_head`` for the writer that published them (every manifest recorded in its
ledger, none verified again). Median of 5 runs each; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

E, P, NAME = "bench", "head", "scanned"


def build(work: Path, versions: int) -> tuple[Any, Any, Any]:
    """A local store with ``versions`` genuine versions of one artifact; the writer's key store
    (its ledger recorded every manifest) and a fresh pod's (same keys, empty ledger)."""
    from dagster_wandb_secure.artifacts.history import history_key, note_published
    from dagster_wandb_secure.core.keys import KeyStore
    from dagster_wandb_secure.core.manifest import (
        MANIFEST_NAME,
        History,
        read_manifest_bytes,
        write_manifest,
    )
    from dagster_wandb_secure.stores.local import LocalArtifactStore

    ks = KeyStore.open(work / "keys")
    ks.generate("ed25519")
    store = LocalArtifactStore(work / "store")
    ctx = {"artifact": NAME, "type": "dataset", "project": f"{E}/{P}", "partition": None}
    key = history_key(E, P, NAME)
    for i in range(versions):
        folder = work / "src" / str(i)
        folder.mkdir(parents=True)
        payload = folder / "output.bin"
        payload.write_bytes(b"payload %d" % i)
        manifest, _ = write_manifest({"output.bin": payload}, key_store=ks, context=ctx,
                                     record=False, history=History(sequence=i + 1, parent=None))
        (folder / MANIFEST_NAME).write_bytes(manifest)
        av = store.publish(entity=E, project=P, name=NAME, type="dataset",
                           files={"output.bin": payload, MANIFEST_NAME: folder / MANIFEST_NAME})
        vm = read_manifest_bytes(manifest, key_store=ks, expected_context=ctx)
        assert vm.position is not None
        note_published(ks, key, digest=vm.digest, position=vm.position,
                       version=av.version_label, aliases=())
    shutil.copytree(work / "keys", work / "pod", ignore=shutil.ignore_patterns("ledger*"))
    return store, ks, KeyStore.open(work / "pod")


def before_scan(store: Any, key_store: Any) -> int:
    """The head scan as it was before ``list_manifests``: the highest verified sequence."""
    from dagster_wandb_secure.artifacts.target import version_context
    from dagster_wandb_secure.core.errors import SecureArtifactError
    from dagster_wandb_secure.core.manifest import MANIFEST_NAME, read_manifest

    best = 0
    for av in list(store.list_versions(entity=E, project=P, name=NAME)):
        try:
            vm = read_manifest(store.file_path(av, MANIFEST_NAME), key_store=key_store,
                               expected_context=version_context(av), version=av.version_label)
        except (SecureArtifactError, OSError):
            continue
        if vm.position is not None:
            best = max(best, vm.position.sequence)
    return best


def _median_ms(fn: Any, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 1)


def run(versions: int) -> dict[str, Any]:
    from dagster_wandb_secure.artifacts.history import store_head

    work = Path(tempfile.mkdtemp(prefix="bench-head-"))
    try:
        t0 = time.perf_counter()
        store, writer, pod = build(work, versions)
        built = time.perf_counter() - t0
        for ks in (writer, pod):
            head = store_head(store, ks, E, P, NAME)
            assert head is not None and head.sequence == versions, head
        assert before_scan(store, pod) == versions
        load_start = os.getloadavg()
        out = {
            f"writer_head_scan_ms_{versions}_before": _median_ms(lambda: before_scan(store, pod)),
            f"writer_head_scan_ms_{versions}_cold": _median_ms(
                lambda: store_head(store, pod, E, P, NAME)
            ),
            f"writer_head_scan_ms_{versions}": _median_ms(
                lambda: store_head(store, writer, E, P, NAME)
            ),
            "versions": versions,
            "build_s": round(built, 1),
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(),
        }
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=1000)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.versions), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
