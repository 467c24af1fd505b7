"""Issue 12 item 6: names that cannot collide, and asset reads that always bind the asset key.

Each pair used to share one artifact name; written through real ``materialize`` on the local store
and on the W&B store offline (its local mirror), each must now get its own name, each reader the
value its own asset wrote, and the CLI (``audit``, ``verify``) must show them as distinct
artifacts. A reader whose upstream asset is not in the run must refuse another asset's signed
data (typed error)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from dagster import (
    AssetIn,
    AssetKey,
    Definitions,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    Out,
    SourceAsset,
    StaticPartitionsDefinition,
    asset,
    define_asset_job,
    job,
    materialize,
    op,
)
from dagster_wandb_secure.artifacts import naming
from dagster_wandb_secure.cli import app
from dagster_wandb_secure.core.errors import ContextMismatchError
from dagster_wandb_secure.stores.base import ArtifactNotFoundError
from kit.adversarial import ENTITY, IOM_KEY, PROJECT, World, refused


@pytest.fixture(params=["local", "wandb"])
def world(world: World, request: pytest.FixtureRequest) -> World:
    """Every test here on both stores (``wandb``: offline, the mirror is ``world.store_dir``)."""
    world.extra["store"] = request.param
    return world


def _writer(path: list[str], value: Any, partitions_def: Any = None) -> Any:
    @asset(key=AssetKey(path), io_manager_key=IOM_KEY, partitions_def=partitions_def)
    def _w(context) -> Any:  # type: ignore[no-untyped-def]  # noqa: ANN001
        return value if partitions_def is None else f"{value}:{context.partition_key}"

    return _w


def _read(world: World, path: list[str], *, partitions_def: Any = None, key: Any = None) -> Any:
    """What user code receives for ``path``, read in a run that does not materialize it."""
    got: dict[str, Any] = {}
    up = SourceAsset(key=AssetKey(path), io_manager_key=IOM_KEY, partitions_def=partitions_def)

    @asset(
        name="reader",
        partitions_def=partitions_def if key is not None else None,
        ins={"up": AssetIn(key=AssetKey(path), input_manager_key=IOM_KEY)},
    )
    def reader(up: Any) -> None:
        got["value"] = up

    result = materialize([up, reader], resources={IOM_KEY: world.iom()}, partition_key=key)
    assert result.success
    return got["value"]


def _names(world: World) -> set[str]:
    return {av.name for av in world.store.list_versions()}


def _store_args(world: World) -> list[str]:
    args = ["--store-dir", str(world.store_dir), "-k", str(world.keys)]
    if world.extra["store"] == "wandb":
        args += ["--store", "wandb", "--entity", ENTITY, "--project", PROJECT]
    return args


def _cli_shows_distinct(world: World, *names: str) -> None:
    """``audit`` lists one valid artifact per name; ``verify`` accepts each version folder for
    its own name and refuses it for the other."""
    runner = CliRunner()
    result = runner.invoke(app, ["audit", *_store_args(world), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stdout
    report = json.loads(result.stdout)
    rows = {row["name"]: row["status"] for row in report["versions"]}
    assert len(names) == 2 and rows == {name: "valid" for name in names}, rows
    for name, other in zip(names, reversed(names), strict=True):
        folder = world.store.resolve(ENTITY, PROJECT, name, alias="latest").root
        ok = runner.invoke(app, ["verify", str(folder), "--artifact", name, "-k",
                                 str(world.keys), "--json"], catch_exceptions=False)
        assert ok.exit_code == 0 and json.loads(ok.stdout)["verdict"] == "valid", ok.stdout
        bad = runner.invoke(app, ["verify", str(folder), "--artifact", other, "-k",
                                  str(world.keys), "--json"], catch_exceptions=False)
        assert bad.exit_code == 1 and json.loads(bad.stdout)["verdict"] == "failed", bad.stdout


def test_one_part_key_with_dash_vs_two_part_key(world: World) -> None:
    iom = world.iom()
    assert materialize([_writer(["a-b"], "one part")], resources={IOM_KEY: iom}).success
    assert materialize([_writer(["a", "b"], "two parts")], resources={IOM_KEY: iom}).success
    assert len(_names(world)) == 2
    assert "a-b" in _names(world)  # the upstream name of a one-part key is kept
    assert _read(world, ["a-b"]) == "one part"
    assert _read(world, ["a", "b"]) == "two parts"
    _cli_shows_distinct(world, "a-b", naming.artifact_name_for_asset_key(["a", "b"]))



def test_dotted_key_vs_partition_of_another_asset(world: World) -> None:
    parts = StaticPartitionsDefinition(["y"])
    iom = world.iom()
    assert materialize(
        [_writer(["x"], "x", parts)], resources={IOM_KEY: iom}, partition_key="y"
    ).success
    assert materialize([_writer(["x.y"], "dotted")], resources={IOM_KEY: iom}).success
    assert len(_names(world)) == 2
    assert "x.y" in _names(world)  # partition y of x keeps its name
    assert _read(world, ["x.y"]) == "dotted"
    assert _read(world, ["x"], partitions_def=parts, key="y") == "x:y"
    _cli_shows_distinct(world, "x.y", naming.artifact_name_for_asset_key(["x.y"]))



def test_partitions_with_pipe_vs_dash(world: World) -> None:
    parts = StaticPartitionsDefinition(["a|b", "a-b"])
    iom = world.iom()
    for key in ("a|b", "a-b"):
        assert materialize(
            [_writer(["p"], "p", parts)], resources={IOM_KEY: iom}, partition_key=key
        ).success
    assert len(_names(world)) == 2
    assert "p.a-b" in _names(world)
    assert _read(world, ["p"], partitions_def=parts, key="a|b") == "p:a|b"
    assert _read(world, ["p"], partitions_def=parts, key="a-b") == "p:a-b"
    _cli_shows_distinct(world, naming.artifact_name("p", "a|b"), "p.a-b")



def test_multi_partitions_that_join_alike(world: World) -> None:
    parts = MultiPartitionsDefinition(
        {
            "d1": StaticPartitionsDefinition(["a", "a-b"]),
            "d2": StaticPartitionsDefinition(["b-c", "c"]),
        }
    )
    one = MultiPartitionKey({"d1": "a", "d2": "b-c"})  # a|b-c
    two = MultiPartitionKey({"d1": "a-b", "d2": "c"})  # a-b|c
    iom = world.iom()
    for key in (one, two):
        assert materialize(
            [_writer(["m"], "m", parts)], resources={IOM_KEY: iom}, partition_key=key
        ).success
    assert len(_names(world)) == 2
    assert "m.a-b-c" in _names(world)  # only the last value has a dash: readable form kept
    assert _read(world, ["m"], partitions_def=parts, key=one) == "m:a|b-c"
    assert _read(world, ["m"], partitions_def=parts, key=two) == "m:a-b|c"
    _cli_shows_distinct(world, naming.artifact_name("m", one), naming.artifact_name("m", two))



def test_reader_job_never_receives_another_assets_data(world: World) -> None:
    assert materialize([_writer(["a", "b"], "a/b's data")], resources={IOM_KEY: world.iom()}).success
    refused(lambda: _reader_job_value_raising(world), ArtifactNotFoundError, artifact="a-b",
            reason="a-b")


def test_reader_job_binds_the_asset_key_when_upstream_is_not_in_the_run(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version at name "a-b" signed for asset key "a/b" (as the previous encoding wrote it)."""
    import dagster_wandb_secure.io_manager as iom_module

    monkeypatch.setattr(iom_module, "artifact_name_for_asset_key", lambda path: "-".join(path))
    assert materialize([_writer(["a", "b"], "a/b's data")], resources={IOM_KEY: world.iom()}).success
    monkeypatch.undo()
    assert world.store.resolve(ENTITY, PROJECT, "a-b", alias="latest")
    err = refused(lambda: _reader_job_value_raising(world), ContextMismatchError,
                  artifact="a-b", reason="asset_key='a/b'")
    assert "a/b's data" not in str(err)


def _reader_job_value_raising(world: World) -> Any:
    got: dict[str, Any] = {}

    @asset(ins={"up": AssetIn(key=AssetKey(["a-b"]), input_manager_key=IOM_KEY)})
    def downstream(up: Any) -> None:
        got["value"] = up

    defs = Definitions(
        assets=[_writer(["a-b"], "never written"), downstream],
        jobs=[define_asset_job("reader_job", selection=[downstream])],
        resources={IOM_KEY: world.iom()},
    )
    defs.resolve_job_def("reader_job").execute_in_process()
    return got["value"]


def test_source_asset_accepts_an_artifact_signed_without_asset_key(world: World) -> None:
    """An op output (no asset key in its signed context) read through a SourceAsset."""

    @op(out=Out(metadata={"wandb_artifact_configuration": {"name": "made-by-an-op"}},
                io_manager_key=IOM_KEY))
    def make() -> str:
        return "op data"

    @job(resource_defs={IOM_KEY: world.iom()})
    def writer() -> None:
        make()

    assert writer.execute_in_process().success
    assert _read(world, ["made-by-an-op"]) == "op data"


def test_encoding_examples() -> None:
    name, key = naming.artifact_name, naming.artifact_name_for_asset_key
    assert key(["my_artifact"]) == "my_artifact"
    assert key(["my-dataset"]) == "my-dataset"
    assert key(["a", "b"]).startswith("a-b-h") and key(["a", "b"]) != key(["a-b"])
    assert key(["x.y"]) != "x.y" and "." not in key(["x.y"])
    assert key(["a-h0123abcd"]) != "a-h0123abcd"  # a plain name never looks digested
    assert name("d", "2024-01-01") == "d.2024-01-01"
    assert name("c", MultiPartitionKey({"date": "2024-01-01", "color": "red"})) == (
        "c.red-2024-01-01"
    )
    assert name("p", "a|b") != name("p", "a-b") == "p.a-b"
    assert name("m", {"d1": "a", "d2": "b-c"}) != name("m", {"d1": "a-b", "d2": "c"})
