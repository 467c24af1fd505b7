"""Shared pieces of the benchmark suite: configuration, targets, timing, machine facts."""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dagster_wandb_secure.core.keys import KeyStore

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class Target:
    op: str  # "<=" or ">="
    limit: float
    unit: str

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value <= self.limit if self.op == "<=" else value >= self.limit

    def text(self) -> str:
        return f"{self.op} {self.limit:g}{(' ' + self.unit) if self.unit else ''}"


# The metric names and targets of issue 16, in the order the table prints them.
TARGETS: dict[str, Target] = {
    "write_ratio_large": Target("<=", 1.15, ""),
    "read_ratio_large": Target("<=", 1.05, ""),
    "io_manager_ratio_large": Target("<=", 1.50, ""),
    "io_manager_ratio_large_durable": Target("<=", 1.10, ""),
    "io_manager_ratio_small": Target("<=", 1.25, ""),
    "small_overhead_us_ed25519": Target("<=", 150, "us"),
    "small_overhead_us_hmac": Target("<=", 60, "us"),
    "peak_rss_overhead_mib": Target("<=", 64, "MiB"),
    "hash_fraction_of_limit": Target(">=", 0.90, ""),
    "audit_fast_10k_s": Target("<=", 5, "s"),
    "audit_deep_fraction_of_limit": Target(">=", 0.80, ""),
    "ledger_publish_ms_postgres": Target("<=", 2, "ms"),
}
METRICS = tuple(TARGETS)


@dataclass
class Config:
    """Sizes and repetition counts; ``quick`` shrinks everything to a few seconds in total."""

    quick: bool
    workdir: Path
    large_bytes: int
    runs: int
    small_iterations: int
    small_assets: int
    small_asset_runs: int
    large_asset_runs: int
    audit_versions: int
    rss_bytes: int
    payload_sizes: tuple[int, ...]
    deep_versions: int
    deep_bytes: int
    store_sizes: tuple[int, ...]
    scaling_runs: int
    only: frozenset[str] = frozenset()
    load_at_start: list[float] = field(default_factory=list)
    host_memory_at_start: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, *, quick: bool, workdir: Path, only: frozenset[str] = frozenset()) -> Config:
        if quick:
            return cls(
                quick=True,
                workdir=workdir,
                large_bytes=8 * MIB,
                runs=3,
                small_iterations=200,
                small_assets=3,
                small_asset_runs=1,
                large_asset_runs=1,
                audit_versions=20,
                rss_bytes=8 * MIB,
                payload_sizes=(KIB, 64 * KIB, MIB, 8 * MIB),
                deep_versions=4,
                deep_bytes=2 * MIB,
                store_sizes=(5, 20),
                scaling_runs=2,
                only=only,
            )
        return cls(
            quick=False,
            workdir=workdir,
            large_bytes=512 * MIB,
            runs=7,
            small_iterations=2000,
            small_assets=200,
            small_asset_runs=5,
            large_asset_runs=5,
            audit_versions=10_000,
            rss_bytes=512 * MIB,
            payload_sizes=(KIB, 16 * KIB, 256 * KIB, 4 * MIB, 64 * MIB, 256 * MIB, GIB),
            deep_versions=16,
            deep_bytes=32 * MIB,
            store_sizes=(100, 1000, 10_000),
            scaling_runs=3,
            only=only,
        )

    def wants(self, group: str) -> bool:
        return not self.only or group in self.only


@dataclass
class MetricResult:
    """One metric: the headline value plus the two medians it came from."""

    name: str
    value: float | None
    baseline: float | None = None
    candidate: float | None = None
    unit: str = "s"  # unit of baseline / candidate
    baseline_label: str = ""
    candidate_label: str = ""
    runs: int = 0
    note: str = ""
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> Target:
        return TARGETS[self.name]

    @property
    def ok(self) -> bool | None:
        return self.target.met(self.value)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["target"] = self.target.text()
        out["ok"] = self.ok
        return out


def failed(name: str, exc: BaseException) -> MetricResult:
    """A metric that could not be measured (reported as such, never as a pass)."""
    return MetricResult(name=name, value=None, error=f"{type(exc).__name__}: {exc}")


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def interleaved(
    baseline: Callable[[], float], candidate: Callable[[], float], runs: int
) -> tuple[list[float], list[float]]:
    """Run ``baseline`` and ``candidate`` ``runs`` times each, alternating which goes first.

    Each callable does its own setup and returns the seconds of the part it measures, so
    allocation of inputs and deleting of outputs stay out of the figures."""
    base: list[float] = []
    cand: list[float] = []
    for i in range(runs):
        order = ((base, baseline), (cand, candidate))
        for sink, fn in order if i % 2 == 0 else reversed(order):
            gc.collect()
            sink.append(fn())
    return base, cand


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``; the garbage collector is paused inside."""

    def __enter__(self) -> Timer:
        self._gc = gc.isenabled()
        gc.disable()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
        if self._gc:
            gc.enable()


def machine() -> dict[str, Any]:
    """CPU model and core count from /proc/cpuinfo, memory, Python and library versions."""
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    mem_gib: float | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    versions: dict[str, str] = {}
    for mod in ("numpy", "dagster", "wandb", "cryptography"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            versions[mod] = "missing"
    try:
        load = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        load = []
    return {
        "load_average_1_5_15min": load,
        "cpu_model": model,
        "cores": os.cpu_count(),
        "sha_extensions": "sha_ni" in flags if flags else None,
        "memory_gib": mem_gib,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
    }


PAGE_REPORTING = Path("/sys/module/page_reporting/parameters")


def _page_reporting() -> dict[str, Any] | None:
    """The guest kernel's free page reporting settings (virtio-balloon hands free blocks of
    ``2**page_reporting_order`` pages back to the host), or None where the module is absent."""
    if not PAGE_REPORTING.is_dir():
        return None
    out: dict[str, Any] = {}
    for item in sorted(PAGE_REPORTING.iterdir()):
        try:
            text = item.read_text().strip()
        except OSError:
            continue
        out[item.name] = int(text) if text.lstrip("-").isdigit() else text
    # a bound virtio-balloon device offering VIRTIO_BALLOON_F_REPORTING (feature bit 5)
    out["virtio_balloon_reporting"] = False
    balloon = Path("/sys/bus/virtio/drivers/virtio_balloon")
    for dev in balloon.iterdir() if balloon.is_dir() else ():
        try:
            features = (dev / "features").read_text()
        except OSError:
            continue
        out["virtio_balloon_reporting"] |= features[5:6] == "1"
    return out


def _touch_seconds(nbytes: int) -> float:
    """Seconds to fault in a new private anonymous mapping of ``nbytes`` (one write per page)."""
    import mmap

    import numpy as np

    flags = getattr(mmap, "MAP_PRIVATE", 0) | mmap.MAP_ANONYMOUS
    mapping = mmap.mmap(-1, nbytes, flags=flags)
    try:
        pages = np.frombuffer(mapping, np.uint8)
        with Timer() as t:
            pages[:: mmap.PAGESIZE] = 1
        del pages
    finally:
        mapping.close()
    return t.seconds


def _write_seconds(path: Path, data: memoryview) -> float:
    with Timer() as t, path.open("wb") as fh:
        fh.write(data)
    return t.seconds


def host_memory(workdir: Path, nbytes: int) -> dict[str, Any]:
    """What fresh memory costs on this host right now, in seconds per GiB.

    On a VM whose free pages are reported to the host (Firecracker with virtio-balloon), memory
    that has been free for a second or two is no longer backed by the host, and the first touch
    of each page costs a host fault; pages freed a moment ago are still backed. Large-payload
    figures move with that state, so every run prints it:

    - ``anon_touch``: a new anonymous mapping faulted in (what a read buffer costs);
    - ``anon_retouch``: the same right after the previous one was unmapped (pages just freed);
    - ``page_cache_grow``: writing ``nbytes`` to a new file while the last one stays cached
      (what a store that keeps every version costs);
    - ``page_cache_reuse``: writing ``nbytes`` to a new file right after deleting the previous
      one (its pages just freed: what overwriting one file costs).
    The probe files are deleted afterwards."""
    gib = nbytes / GIB
    out: dict[str, Any] = {"probe_bytes": nbytes}
    try:
        out["anon_touch_s_per_gib"] = round(_touch_seconds(nbytes) / gib, 3)
        out["anon_retouch_s_per_gib"] = round(_touch_seconds(nbytes) / gib, 3)
        import numpy as np

        data = memoryview(np.ones(nbytes, np.uint8))
        probe = workdir / "host-memory-probe"
        probe.mkdir(parents=True, exist_ok=True)
        try:
            _write_seconds(probe / "a", data)
            out["page_cache_grow_s_per_gib"] = round(_write_seconds(probe / "b", data) / gib, 3)
            (probe / "b").unlink()
            out["page_cache_reuse_s_per_gib"] = round(_write_seconds(probe / "c", data) / gib, 3)
        finally:
            for item in probe.iterdir():
                item.unlink()
            probe.rmdir()
    except (OSError, ValueError, ImportError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    out["page_reporting"] = _page_reporting()
    return out


def host_memory_text(probe: dict[str, Any]) -> str:
    """One line for the table header."""
    if "error" in probe:
        return f"host memory probe failed: {probe['error']}"
    reporting = probe.get("page_reporting")
    rep = (
        "no free page reporting"
        if not reporting
        else f"free page reporting order {reporting.get('page_reporting_order')}"
        + (" by virtio-balloon" if reporting.get("virtio_balloon_reporting") else "")
    )
    return (
        f"host memory (s/GiB, {probe['probe_bytes'] >> 20} MiB probe): anon touch "
        f"{probe['anon_touch_s_per_gib']}, just freed {probe['anon_retouch_s_per_gib']}; page "
        f"cache grow {probe['page_cache_grow_s_per_gib']}, reuse "
        f"{probe['page_cache_reuse_s_per_gib']} ({rep})"
    )


def make_key_store(path: Path, alg: str) -> KeyStore:
    """A fresh key store at ``path`` whose primary key uses ``alg``."""
    from dagster_wandb_secure.core.keys import KeyStore

    store = KeyStore.open(path)
    store.generate(alg)
    return store


def isolate_environment(home: Path) -> None:
    """Keep Dagster, wandb and the library away from the real home directory and the network."""
    for sub in ("dagster", "wandb", "wandb-data", "wandb-cache", "wandb-config", "wandb-artifacts"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    os.environ["HOME"] = str(home)
    os.environ["DAGSTER_DISABLE_TELEMETRY"] = "1"
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    os.environ["WANDB_DISABLE_GIT"] = "true"
    os.environ["WANDB_DIR"] = str(home / "wandb")
    os.environ["WANDB_DATA_DIR"] = str(home / "wandb-data")
    os.environ["WANDB_CACHE_DIR"] = str(home / "wandb-cache")
    os.environ["WANDB_CONFIG_DIR"] = str(home / "wandb-config")
    os.environ["WANDB_ARTIFACT_DIR"] = str(home / "wandb-artifacts")


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"
