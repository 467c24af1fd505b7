"""The shapes of upstream's example project (``examples/with_wandb`` in dagster-io/dagster), as
this project's own tests, with the upstream import changed to ``dagster_wandb_secure``.

Every test runs in both offline modes: ``local`` (no API key: the embedded local store) and
``wandb-offline`` (a dummy key with ``WANDB_MODE=offline``: wandb's offline run plus its local
mirror). Each asserts the values downstream assets actually receive.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import pytest
import wandb

from dagster import (
    AssetIn,
    AssetKey,
    AssetOut,
    DagsterInstance,
    DailyPartitionsDefinition,
    In,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    Out,
    SourceAsset,
    StaticPartitionsDefinition,
    TimeWindowPartitionMapping,
    asset,
    job,
    make_values_resource,
    materialize,
    multi_asset,
    op,
)
from dagster_wandb_secure import wandb_artifacts_io_manager, wandb_resource

DUMMY_API_KEY = "0123456789abcdef0123456789abcdef01234567"

RUN_CONFIG = {"resources": {"wandb_config": {"config": {"entity": "team", "project": "proj"}}}}
SEEN: dict[str, Any] = {}


@pytest.fixture(params=["local", "wandb-offline"])
def mode(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, key_store: Any, workdir: Path
) -> str:
    SEEN.clear()
    monkeypatch.setenv("DAGSTER_HOME", str(workdir))  # base_dir: stores and registry live here
    if request.param == "local":
        monkeypatch.setenv("WANDB_API_KEY", "")
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_API_KEY", DUMMY_API_KEY)
        monkeypatch.setenv("WANDB_MODE", "offline")
    return str(request.param)


def resources() -> dict[str, Any]:
    return {
        "wandb_config": make_values_resource(entity=str, project=str),
        "wandb_resource": wandb_resource.configured({"api_key": {"env": "WANDB_API_KEY"}}),
        "io_manager": wandb_artifacts_io_manager.configured({"cache_duration_in_minutes": 60}),
    }


def run(assets: list[Any], **kwargs: Any) -> Any:
    kwargs.setdefault("run_config", RUN_CONFIG)
    instance = DagsterInstance.ephemeral()
    result = materialize(assets, resources=resources(), instance=instance, **kwargs)
    assert result.success
    result.test_instance = instance
    return result


def logs(result: Any, level: str) -> list[str]:
    """The user log lines (context.log.*) of a run at ``level`` (INFO or WARNING)."""
    wanted = {"INFO": logging.INFO, "WARNING": logging.WARNING}[level]
    return [
        e.user_message
        for e in result.test_instance.all_logs(result.run_id)
        if e.level == wanted and isinstance(e.user_message, str)
    ]


# --- upstream's public names at upstream's module paths -----------------------------------

UPSTREAM_NAMES = {
    "dagster_wandb_secure": [
        "SerializationModule",
        "WandbArtifactConfiguration",
        "WandbArtifactsIOManagerError",
        "run_launch_agent",
        "run_launch_job",
        "wandb_artifacts_io_manager",
        "wandb_resource",
    ],
    "dagster_wandb_secure.io_manager": [
        "ArtifactsIOManager",
        "Config",
        "WandbArtifactsIOManagerError",
        "wandb_artifacts_io_manager",
    ],
    "dagster_wandb_secure.resources": ["wandb_resource", "WANDB_CLOUD_HOST"],
    "dagster_wandb_secure.types": ["SerializationModule", "WandbArtifactConfiguration"],
    "dagster_wandb_secure.launch.ops": ["run_launch_agent", "run_launch_job"],
    "dagster_wandb_secure.launch.configs": ["launch_config", "launch_agent_config"],
    "dagster_wandb_secure.utils.errors": [
        "WandbArtifactsIOManagerError",
        "SUPPORTED_READ_CONFIG_KEYS",
        "SUPPORTED_WRITE_CONFIG_KEYS",
        "SUPPORTED_PARTITION_CONFIG_KEYS",
        "raise_on_empty_configuration",
        "raise_on_unknown_partition_keys",
        "raise_on_unknown_read_configuration_keys",
        "raise_on_unknown_write_configuration_keys",
    ],
    "dagster_wandb_secure.utils.pickling": [
        "ACCEPTED_SERIALIZATION_MODULES",
        "PICKLE_FILENAME",
        "DILL_FILENAME",
        "CLOUDPICKLE_FILENAME",
        "JOBLIB_FILENAME",
        "pickle_artifact_content",
        "unpickle_artifact_content",
    ],
    "dagster_wandb_secure.version": ["__version__"],
}


@pytest.mark.parametrize("module", sorted(UPSTREAM_NAMES))
def test_every_upstream_name_imports_from_its_upstream_path(module: str) -> None:
    mod = importlib.import_module(module)
    for name in UPSTREAM_NAMES[module]:
        assert getattr(mod, name) is not None, f"{module}.{name}"


def test_upstream_error_is_the_same_class_everywhere_and_pickling_helpers_refuse(
    tmp_path: Path,
) -> None:
    from dagster_wandb_secure import WandbArtifactsIOManagerError
    from dagster_wandb_secure.io_manager import WandbArtifactsIOManagerError as a
    from dagster_wandb_secure.utils.errors import WandbArtifactsIOManagerError as b
    from dagster_wandb_secure.utils.pickling import unpickle_artifact_content

    assert WandbArtifactsIOManagerError is a is b
    marker = tmp_path / "ran"
    with pytest.raises(WandbArtifactsIOManagerError, match="not available"):
        unpickle_artifact_content(str(tmp_path))
    assert not marker.exists()


# --- simple example ---------------------------------------------------------------------


def test_simple_list_asset_and_its_reader(mode: str) -> None:
    @asset(name="my_first_list", metadata={"wandb_artifact_configuration": {"type": "dataset"}})
    def create_list() -> list[int]:
        return [1, 2, 3]

    @asset(ins={"my_first_list": AssetIn()})
    def read_list(my_first_list: list[int]) -> None:
        SEEN["list"] = my_first_list

    result = run([create_list, read_list])
    assert SEEN["list"] == [1, 2, 3]
    messages = logs(result, "INFO")
    assert any(m.startswith("signed my_first_list:v0 (seq 1) with ") for m in messages), messages
    assert any(m.startswith("verified my_first_list:v0 (signed seq 1, signed manifest ") for m in messages)
    assert any("(ed25519)" in m for m in messages if m.startswith("verified"))


# --- advanced artifact configuration ---------------------------------------------------


def test_advanced_artifact_with_table_dirs_files_read_every_way(
    mode: str, tmp_path: Path
) -> None:
    folder = tmp_path / "example"
    folder.mkdir()
    (folder / "train.py").write_text("print('train')\n")
    (folder / "README.md").write_text("# readme\n")
    config = {
        "description": "My **Markdown** description",
        "aliases": ["first_alias", "second_alias"],
        "add_dirs": [{"name": "model_dir", "local_path": str(folder)}],
        "add_files": [
            {"name": "my_training_script", "local_path": str(folder / "train.py")},
            {"is_tmp": True, "local_path": str(folder / "README.md")},
        ],
    }

    @asset(name="my_advanced_artifact", metadata={"wandb_artifact_configuration": config})
    def write_advanced() -> wandb.Artifact:
        artifact = wandb.Artifact("my_advanced_artifact", "files")
        artifact.add(wandb.Table(columns=["a", "b", "c"], data=[[1, 2, 3]]), "my_table")
        return artifact

    def reader(name: str, conf: dict[str, Any]) -> Any:
        @asset(
            name=f"read_{name}",
            ins={"x": AssetIn(key="my_advanced_artifact",
                              metadata={"wandb_artifact_configuration": conf})},
        )
        def _read(x: Any) -> None:
            SEEN[name] = x

        return _read

    @asset(ins={"artifact": AssetIn(key="my_advanced_artifact")})
    def get_artifact(artifact: wandb.Artifact) -> None:  # Dagster checks isinstance
        SEEN["artifact"] = artifact

    run([
        write_advanced,
        reader("table", {"get": "my_table"}),
        reader("path", {"get_path": "my_training_script"}),
        reader("v0", {"version": "v0"}),
        reader("alias", {"alias": "first_alias"}),
        get_artifact,
    ])
    assert SEEN["table"].get_column("a") == [1]
    assert Path(SEEN["path"]).read_text() == "print('train')\n"
    art = SEEN["artifact"]
    assert isinstance(art, wandb.Artifact)
    assert art.name == "my_advanced_artifact:v0"
    assert art.version == "v0" and art.type == "files"
    assert art.description == "My **Markdown** description"
    assert {"first_alias", "second_alias", "latest"} <= set(art.aliases)
    assert len(art.digest) == 64
    assert art.get("my_table").get_column("c") == [3]
    assert Path(art.get_path("my_training_script").download()).read_text().startswith("print")
    assert "my_training_script" in art.files()
    assert (Path(art.download()) / "my_training_script").is_file()
    art.verify()
    for v in ("v0", "alias"):
        assert isinstance(SEEN[v], wandb.Artifact) and SEEN[v].version == "v0"


def test_verified_artifact_refuses_what_would_bypass_verification(mode: str) -> None:
    from dagster_wandb_secure.artifacts.view import UnverifiedAccessError

    @asset(name="blob")
    def blob() -> wandb.Artifact:
        artifact = wandb.Artifact("blob", "dataset")
        artifact.add(wandb.Table(columns=["x"], data=[[1]]), "t")
        return artifact

    @asset(ins={"artifact": AssetIn(key="blob")})
    def use(artifact: wandb.Artifact) -> None:
        SEEN["a"] = artifact

    run([blob, use])
    art = SEEN["a"]
    for call in (
        lambda: art.add_file("/etc/hostname"),
        lambda: art.new_draft(),
        lambda: art.save(),
        lambda: art.logged_by(),
        lambda: art.manifest,
        lambda: setattr(art, "metadata", {"x": 1}),
    ):
        with pytest.raises(UnverifiedAccessError, match="not available on a verified artifact"):
            call()
    assert art.get("missing") is None


# --- custom serialization and multi-asset ----------------------------------------------


def test_custom_serialization_and_multi_asset_inference(mode: str) -> None:
    @multi_asset(
        outs={
            "trained_model": AssetOut(
                metadata={"wandb_artifact_configuration": {
                    "type": "model",
                    "serialization_module": {"name": "joblib", "parameters": {"compress": 3}},
                }}
            ),
            "test_set": AssetOut(metadata={"wandb_artifact_configuration": {"type": "dataset"}}),
        }
    )
    def train() -> tuple[dict[str, float], list[list[float]]]:
        return {"slope": 2.0}, [[1.0], [2.0]]

    @asset(ins={"trained_model": AssetIn(), "test_set": AssetIn()})
    def inference(trained_model: dict[str, float], test_set: list[list[float]]) -> None:
        SEEN["predictions"] = [trained_model["slope"] * row[0] for row in test_set]

    run([train, inference])
    assert SEEN["predictions"] == [2.0, 4.0]


# --- partitions ------------------------------------------------------------------------

DAILY = DailyPartitionsDefinition(start_date="2023-01-01", end_date="2023-01-04")


def test_simple_daily_partitions_whole_and_with_offset_window(mode: str) -> None:
    @asset(partitions_def=DAILY, name="daily")
    def daily(context) -> str:
        return f"day {context.partition_key}"

    @asset(partitions_def=DAILY, ins={"daily": AssetIn(
        partition_mapping=TimeWindowPartitionMapping(start_offset=-1))})
    def two_days(context, daily: Any) -> None:
        SEEN[context.partition_key] = daily

    for key in ("2023-01-01", "2023-01-02"):
        run([daily], partition_key=key)
    run([daily], partition_key="2023-01-03")
    run([daily, two_days], partition_key="2023-01-03", selection=[two_days])
    assert SEEN["2023-01-03"] == {"2023-01-02": "day 2023-01-02", "2023-01-03": "day 2023-01-03"}
    # a single-partition window is unwrapped into a bare value, as upstream
    run([daily, two_days], partition_key="2023-01-01", selection=[two_days])
    assert SEEN["2023-01-01"] == "day 2023-01-01"


def test_multi_partitions_key_formatting(mode: str) -> None:
    parts = MultiPartitionsDefinition({
        "date": StaticPartitionsDefinition(["2023-01-01", "2023-01-02"]),
        "color": StaticPartitionsDefinition(["red", "blue"]),
    })

    @asset(partitions_def=parts, name="multi")
    def multi(context) -> str:
        key = context.partition_key
        return f"{key.keys_by_dimension['color']}@{key.keys_by_dimension['date']}"

    @asset(ins={"multi": AssetIn()})
    def read_all(multi: dict[str, str]) -> None:
        SEEN["all"] = multi

    for date in ("2023-01-01", "2023-01-02"):
        for color in ("red", "blue"):
            run([multi], partition_key=MultiPartitionKey({"date": date, "color": color}))
    run([multi, read_all], selection=[read_all])
    assert SEEN["all"]["red|2023-01-02"] == "red@2023-01-02"
    assert len(SEEN["all"]) == 4


COLORS = StaticPartitionsDefinition(["red", "orange", "yellow", "blue", "green"])
ADVANCED = "my_advanced_configuration_partitioned_asset"


def test_advanced_partitions_wildcard_overrides_and_missing_get(mode: str) -> None:
    @asset(partitions_def=COLORS, name=ADVANCED,
           metadata={"wandb_artifact_configuration": {"aliases": ["special_alias"]}})
    def write(context) -> Any:
        key = context.partition_key
        if key == "red":
            return "red"
        if key == "orange":
            return wandb.Table(columns=["color"], data=[["orange"]])
        artifact = wandb.Artifact(ADVANCED, "dataset")
        if key == "yellow":
            artifact.add(wandb.Table(columns=["color"], data=[["yellow"]]), "custom_table_name")
        else:
            artifact.add(wandb.Table(columns=["color", "value"], data=[[key, 1]]),
                         "default_table_name")
        return artifact

    @asset(ins={"partitions": AssetIn(key=ADVANCED, metadata={"wandb_artifact_configuration": {
        "partitions": {
            "*": {"get": "default_table_name"},
            "yellow": {"get": "custom_table_name"},
            "orange": {"version": "v0"},
            "blue": {"alias": "special_alias", "get": "default_table_name"},
        }}})})
    def read(partitions: dict[str, Any]) -> None:
        SEEN["p"] = partitions

    for key in COLORS.get_partition_keys():
        run([write], partition_key=key)
    result = run([write, read], selection=[read])
    got = SEEN["p"]
    assert got["red"] == "red"  # '*' get found nothing: the partition's content, as upstream
    assert isinstance(got["orange"], wandb.Artifact)
    assert got["orange"].get("Table").get_column("color") == ["orange"]
    assert got["yellow"].get_column("color") == ["yellow"]
    assert got["blue"].get_column("color") == ["blue"]
    assert got["green"].get_column("color") == ["green"]
    warnings = logs(result, "WARNING")
    assert any("'red'" in w and "default_table_name" in w for w in warnings), warnings


# --- model registry ----------------------------------------------------------------------


def _registry_assets(model: Any) -> list[Any]:
    @asset(name="registered_model", ins={"artifact": AssetIn(key="my_model")},
           config_schema={"model_registry": str})
    def promote(context, artifact: wandb.Artifact) -> None:
        SEEN["link"] = artifact.link(
            target_path=context.op_config["model_registry"], aliases="production"
        )

    return [model, promote]


def _model() -> Any:
    @asset(name="my_model")
    def write_model() -> wandb.Artifact:
        artifact = wandb.Artifact("my_model", "model")
        artifact.add(wandb.Table(columns=["w"], data=[[0.5]]), "weights")
        return artifact

    return write_model


def _promote_config() -> dict[str, Any]:
    return {**RUN_CONFIG, "ops": {
        "registered_model": {"config": {"model_registry": "team/model-registry/my_model"}}}}


def _read_production() -> list[Any]:
    production = SourceAsset(key=AssetKey(["model-registry", "my_model"]))

    @asset(ins={"model": AssetIn(key=AssetKey(["model-registry", "my_model"]),
                                 metadata={"wandb_artifact_configuration": {
                                     "alias": "production"}})})
    def serve(model: wandb.Artifact) -> None:
        SEEN["served"] = model

    return [production, serve]


def test_model_registry_link_and_read_by_alias(mode: str) -> None:
    assets = _registry_assets(_model())
    run(assets, run_config=_promote_config())
    assert SEEN["link"].name == "team/model-registry/my_model:v0"
    result = run(_read_production())
    served = SEEN["served"]
    assert isinstance(served, wandb.Artifact) and served.name == "my_model:v0"
    assert served.get("weights").get_column("w") == [0.5]
    assert any(m.startswith("verified link team/model-registry/my_model:v0")
               for m in logs(result, "INFO"))


def test_model_registry_link_option_on_output_and_audit(mode: str, workdir: Path) -> None:
    @asset(name="clf", metadata={"wandb_artifact_configuration": {
        "type": "model", "link": {"target_path": "model-registry/clf", "aliases": ["staging"]}}})
    def clf() -> dict[str, int]:
        return {"depth": 3}

    @asset(ins={"m": AssetIn(key=AssetKey(["model-registry", "clf"]),
                             metadata={"wandb_artifact_configuration": {"alias": "staging"}})})
    def use(m: dict[str, int]) -> None:
        SEEN["m"] = m

    run([clf])
    run([SourceAsset(key=AssetKey(["model-registry", "clf"])), use])
    assert SEEN["m"] == {"depth": 3}

    from dagster_wandb_secure.core.keys import KeyStore
    from dagster_wandb_secure.maintenance.audit import audit_links

    roots = [p.parent for p in workdir.rglob("registry") if p.is_dir()]
    assert roots
    rows = audit_links(roots[0], KeyStore.open(workdir / "keys"))
    assert [(r["registry"], r["status"]) for r in rows] == [("team/model-registry/clf:v0", "valid")]
    assert rows[0]["aliases"] == ["staging"]


def test_tampered_link_statement_is_refused(mode: str, workdir: Path) -> None:
    assets = _registry_assets(_model())
    run(assets, run_config=_promote_config())
    link = next(workdir.rglob("v0.link"))
    data = bytearray(link.read_bytes())
    data[-3] ^= 1
    link.write_bytes(bytes(data))
    result = materialize(_read_production(), resources=resources(), run_config=RUN_CONFIG,
                         raise_on_error=False)
    assert not result.success
    assert "served" not in SEEN


def test_model_registry_with_an_empty_model_artifact(mode: str) -> None:
    @asset(name="my_model")
    def write_model() -> wandb.Artifact:
        return wandb.Artifact("my_model", "model")

    run(_registry_assets(write_model), run_config=_promote_config())
    run(_read_production())
    assert SEEN["served"].files() == []


# --- op jobs and launch ops ---------------------------------------------------------------


def test_simple_op_job_and_partitioned_op_job(mode: str) -> None:
    @op(out=Out(metadata={"wandb_artifact_configuration": {"name": "op_list"}}))
    def make() -> list[int]:
        return [4, 5]

    @op(ins={"values": In(metadata={"wandb_artifact_configuration": {"name": "op_list"}})})
    def consume(values: list[int]) -> None:
        SEEN["ops"] = values

    @job(resource_defs=resources())
    def simple() -> None:
        consume(make())

    assert simple.execute_in_process(run_config=RUN_CONFIG).success
    assert SEEN["ops"] == [4, 5]

    @op(out=Out(metadata={"wandb_artifact_configuration": {"name": "op_part"}}))
    def make_part(context) -> str:
        return f"part {context.partition_key}"

    @op(ins={"value": In(metadata={"wandb_artifact_configuration": {"name": "op_part"}})})
    def consume_part(context, value: str) -> None:
        SEEN[context.partition_key] = value

    @job(resource_defs=resources(), partitions_def=StaticPartitionsDefinition(["a", "b"]))
    def partitioned() -> None:
        consume_part(make_part())

    assert partitioned.execute_in_process(run_config=RUN_CONFIG, partition_key="b").success
    assert SEEN["b"] == "part b"


def test_launch_op_modules_import_and_refuse_offline(mode: str) -> None:
    from dagster_wandb_secure.launch.ops import run_launch_agent, run_launch_job

    assert run_launch_agent.name and run_launch_job.name
