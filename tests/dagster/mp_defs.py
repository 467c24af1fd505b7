"""Module-level Definitions for the multiprocess test: child processes import this module.

The key store and the local store come from environment variables the test sets, so every step
process uses the same ones."""

from typing import Any

from dagster import AssetIn, AssetOut, Definitions, EnvVar, asset, define_asset_job, multi_asset
from dagster_wandb_secure import WandbArtifactsIOManager

N_SOURCES = 4


@multi_asset(
    outs={f"source_{i}": AssetOut(io_manager_key="m") for i in range(N_SOURCES)},
    group_name="mp",
)
def sources():  # type: ignore[no-untyped-def]  # (a Tuple annotation would be required)
    """One step writes all sources (fewer processes keep the test fast)."""
    return tuple({"id": i, "values": list(range(i * 10, i * 10 + 10))} for i in range(N_SOURCES))


def _double(i: int) -> Any:
    @asset(
        name=f"double_{i}",
        ins={"src": AssetIn(key=f"source_{i}", input_manager_key="m")},
        io_manager_key="m",
        group_name="mp",
    )
    def _dbl(src: dict[str, Any]) -> list[int]:
        return [2 * v for v in src["values"]]

    return _dbl


DOUBLES = [_double(i) for i in range(N_SOURCES)]


@asset(
    ins={f"double_{i}": AssetIn(input_manager_key="m") for i in range(N_SOURCES)},
    io_manager_key="m",
    group_name="mp",
)
def total(**doubles: list[int]) -> int:
    return sum(sum(v) for v in doubles.values())


defs = Definitions(
    assets=[sources, *DOUBLES, total],
    jobs=[define_asset_job("mp_job")],
    resources={
        "m": WandbArtifactsIOManager(
            key_store=EnvVar("DWS_MP_KEYS"),
            store="local",
            local_store_dir=EnvVar("DWS_MP_STORE"),
            base_dir=EnvVar("DWS_MP_BASE"),
            entity="team",
            project="mp",
            cache_duration_in_minutes=0,
        )
    },
)


def mp_job() -> Any:
    return defs.resolve_job_def("mp_job")
