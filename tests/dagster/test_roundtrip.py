"""Write and read signed artifacts through real Dagster runs against the local store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import wandb

from dagster import (
    AssetIn,
    AssetKey,
    AssetSelection,
    DailyPartitionsDefinition,
    In,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    Out,
    SourceAsset,
    StaticPartitionsDefinition,
    asset,
    job,
    materialize,
    op,
)
from dagster_wandb_secure import WandbArtifactsIOManagerError
from dagster_wandb_secure.artifacts.view import ArtifactView
from dagster_wandb_secure.core.manifest import MANIFEST_NAME
from dagster_wandb_secure.stores.local import LocalArtifactStore
from kit.dagster_runs import failure_text

UPSTREAM_METADATA_KEYS = {
    "dagster_run_id",
    "wandb_artifact_id",
    "wandb_artifact_type",
    "wandb_artifact_version",
    "wandb_artifact_size",
    "wandb_artifact_url",
    "wandb_entity",
    "wandb_project",
    "wandb_run_id",
    "wandb_run_name",
    "wandb_run_path",
}  # wandb_run_url only when known (W&B online): never an empty row
SECURE_METADATA_KEYS = {
    "signature_status",
    "signing_key_id",
    "signature_algorithm",
    "payload_blake3",
    "payload_digest_alg",
    "serializer",
}


def _chain(exc: BaseException) -> str:
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def _materialization_metadata(result: Any, key: str) -> dict[str, Any]:
    mats = result.asset_materializations_for_node(key)
    assert mats, f"no materialization for {key}"
    return {k: getattr(v, "value", v) for k, v in mats[-1].metadata.items()}


def test_python_object_roundtrip_both_algorithms(
    key_store_alg: Any, alg: str, make_io_manager: Any, store_dir: Path
) -> None:
    seen: dict[str, Any] = {}

    @asset(
        metadata={"wandb_artifact_configuration": {"type": "dataset", "aliases": ["gold"]}},
        io_manager_key="wandb_artifacts_manager",
    )
    def numbers() -> dict[str, Any]:
        return {"values": [1, 2, 3], "label": "x"}

    @asset(ins={"numbers": AssetIn(input_manager_key="wandb_artifacts_manager")})
    def consumer(numbers: dict[str, Any]) -> None:
        seen["value"] = numbers

    result = materialize(
        [numbers, consumer], resources={"wandb_artifacts_manager": make_io_manager()}
    )
    assert result.success
    assert seen["value"] == {"values": [1, 2, 3], "label": "x"}
    meta = _materialization_metadata(result, "numbers")
    assert UPSTREAM_METADATA_KEYS | SECURE_METADATA_KEYS <= set(meta)
    assert meta["signature_status"] == "signed"
    assert meta["signature_algorithm"] == alg
    assert meta["serializer"] == "pickle"
    assert meta["wandb_artifact_version"] == "v0"
    assert meta["wandb_artifact_type"] == "dataset"
    assert "wandb_run_url" not in meta  # local store: unknown, so omitted

    store = LocalArtifactStore(store_dir)
    av = store.resolve("team", "proj", "numbers", alias="latest")
    assert set(av.files) == {"output.pickle", MANIFEST_NAME}
    assert "gold" in av.aliases
    assert f"dagster-run-{result.run_id[:8]}" in av.aliases
    # the ledger knows the signature and the version it became
    rows = key_store_alg.ledger.rows(artifact="numbers")
    assert rows and all(r.artifact_version == "v0" for r in rows)


def test_user_alias_list_is_not_mutated(key_store: Any, make_io_manager: Any) -> None:
    aliases = ["a1"]

    @asset(
        metadata={"wandb_artifact_configuration": {"aliases": aliases}},
        io_manager_key="m",
    )
    def thing() -> int:
        return 1

    assert materialize([thing], resources={"m": make_io_manager()}).success
    assert materialize([thing], resources={"m": make_io_manager()}).success
    assert aliases == ["a1"]


def test_none_output_writes_nothing(key_store: Any, make_io_manager: Any, store_dir: Path) -> None:
    @asset(io_manager_key="m")
    def nothing() -> None:
        return None

    assert materialize([nothing], resources={"m": make_io_manager()}).success
    assert not list(LocalArtifactStore(store_dir).list_versions())


def test_multi_part_asset_keys_do_not_collide(key_store: Any, make_io_manager: Any) -> None:
    @asset(key_prefix=["a"], name="b", io_manager_key="m")
    def ab() -> str:
        return "a/b"

    @asset(key_prefix=["a"], name="c", io_manager_key="m")
    def ac() -> str:
        return "a/c"

    got: dict[str, Any] = {}

    @asset(
        ins={
            "x": AssetIn(key=AssetKey(["a", "b"]), input_manager_key="m"),
            "y": AssetIn(key=AssetKey(["a", "c"]), input_manager_key="m"),
        }
    )
    def both(x: str, y: str) -> None:
        got.update(x=x, y=y)

    assert materialize([ab, ac, both], resources={"m": make_io_manager()}).success
    assert got == {"x": "a/b", "y": "a/c"}


def _table_asset() -> Any:
    @asset(name="my_artifact_with_table", io_manager_key="m")
    def table_asset() -> Any:
        artifact = wandb.Artifact("my_artifact_with_table", "dataset")
        artifact.add(wandb.Table(columns=["a", "b", "c"], data=[[1, 2, 3]]), "my_table")
        return artifact

    return table_asset


def test_read_patterns_get_get_path_whole(
    key_store: Any, make_io_manager: Any, tmp_path: Path
) -> None:
    extra = tmp_path / "extra.txt"
    extra.write_text("hello")
    data_dir = tmp_path / "data"
    (data_dir / "sub").mkdir(parents=True)
    (data_dir / "sub" / "f.csv").write_text("1,2\n")
    got: dict[str, Any] = {}

    @asset(
        name="bundle",
        metadata={
            "wandb_artifact_configuration": {
                "type": "dataset",
                "add_files": [{"local_path": str(extra), "name": "notes/extra.txt"}],
                "add_dirs": [{"local_path": str(data_dir), "name": "data"}],
            }
        },
        io_manager_key="m",
    )
    def bundle() -> Any:
        return wandb.Table(columns=["a", "b"], data=[[1, 2], [3, 4]])

    @asset(
        ins={
            "table": AssetIn(
                key="bundle",
                metadata={"wandb_artifact_configuration": {"get": "Table"}},
                input_manager_key="m",
            )
        }
    )
    def read_table(table: Any) -> None:
        got["column"] = table.get_column("a")

    @asset(
        ins={
            "path": AssetIn(
                key="bundle",
                metadata={"wandb_artifact_configuration": {"get_path": "notes/extra.txt"}},
                input_manager_key="m",
            )
        }
    )
    def read_path(path: str) -> None:
        got["path"] = path
        got["text"] = Path(path).read_text()

    @asset(ins={"whole": AssetIn(key="bundle", input_manager_key="m")})
    def read_whole(whole: Any) -> None:
        got["whole"] = whole
        got["csv"] = Path(whole.get_path("data/sub/f.csv").download()).read_text()
        got["table2"] = whole.get("Table")

    assets = [bundle, read_table, read_path, read_whole]
    assert materialize(assets, resources={"m": make_io_manager()}).success
    assert got["column"] == [1, 3]
    assert got["text"] == "hello"
    # get_path hands out a private verified copy, never the store's file
    assert "dagster-wandb-secure-cache" in got["path"]
    whole = got["whole"]
    assert isinstance(whole, ArtifactView)
    assert whole.name == "bundle:v0" and whole.version == "v0" and whole.type == "dataset"
    assert "latest" in whole.aliases
    assert got["csv"] == "1,2\n"
    assert got["table2"].get_column("b") == [2, 4]
    root = Path(whole.download())
    assert (root / "notes" / "extra.txt").read_text() == "hello"


def test_user_built_artifact_and_get(key_store: Any, make_io_manager: Any) -> None:
    got: dict[str, Any] = {}

    @asset(
        ins={
            "table": AssetIn(
                key="my_artifact_with_table",
                metadata={"wandb_artifact_configuration": {"get": "my_table"}},
                input_manager_key="m",
            )
        }
    )
    def get_table(table: Any) -> None:
        got["a"] = table.get_column("a")

    assert materialize([_table_asset(), get_table], resources={"m": make_io_manager()}).success
    assert got["a"] == [1]


def test_user_built_artifact_refuses_name_or_type(key_store: Any, make_io_manager: Any) -> None:
    @asset(
        name="art",
        metadata={"wandb_artifact_configuration": {"type": "model"}},
        io_manager_key="m",
    )
    def art() -> Any:
        a = wandb.Artifact("art", "dataset")
        a.add(wandb.Table(columns=["a"], data=[[1]]), "t")
        return a

    result = materialize([art], resources={"m": make_io_manager()}, raise_on_error=False)
    assert not result.success
    text = failure_text(result)
    assert "WandbArtifactsIOManagerError" in text and "'type'" in text


def test_version_and_alias_reads(key_store: Any, make_io_manager: Any) -> None:
    counter = {"n": 0}

    @asset(
        name="versioned",
        metadata={"wandb_artifact_configuration": {"aliases": ["tagged"]}},
        io_manager_key="m",
    )
    def versioned() -> int:
        counter["n"] += 1
        return counter["n"]

    got: dict[str, Any] = {}

    def reader_for(label: str, conf: dict[str, Any]) -> Any:
        @asset(
            name=f"read_{label}",
            ins={
                "versioned": AssetIn(
                    metadata={"wandb_artifact_configuration": conf}, input_manager_key="m"
                )
            },
        )
        def _reader(versioned: int) -> None:
            got[label] = versioned

        return _reader

    readers = [
        reader_for("v0", {"version": "v0"}),
        reader_for("tagged", {"alias": "tagged"}),
        reader_for("latest", {}),
    ]

    iom = make_io_manager()
    assert materialize([versioned], resources={"m": iom}).success
    assert materialize([versioned, *readers], resources={"m": iom}).success
    assert got == {"v0": 1, "tagged": 2, "latest": 2}


@pytest.mark.parametrize(
    "bad",
    [
        {"get": "a", "get_path": "b"},
        {"version": "v0", "alias": "latest"},
        {"gett": "x"},
    ],
)
def test_invalid_read_config_is_refused(key_store: Any, make_io_manager: Any, bad: Any) -> None:
    @asset(io_manager_key="m")
    def src() -> int:
        return 1

    @asset(
        ins={
            "src": AssetIn(
                metadata={"wandb_artifact_configuration": bad}, input_manager_key="m"
            )
        }
    )
    def reader(src: Any) -> None:
        pass

    result = materialize([src, reader], resources={"m": make_io_manager()}, raise_on_error=False)
    assert not result.success
    assert "WandbArtifactsIOManagerError" in failure_text(result)


def test_unknown_write_key_names_the_key(key_store: Any, make_io_manager: Any) -> None:
    @asset(
        metadata={"wandb_artifact_configuration": {"typo_key": 1}},
        io_manager_key="m",
    )
    def thing() -> int:
        return 1

    result = materialize([thing], resources={"m": make_io_manager()}, raise_on_error=False)
    assert not result.success
    assert "typo_key" in failure_text(result)


def test_partitions_wildcard_and_specific(key_store: Any, make_io_manager: Any) -> None:
    parts = StaticPartitionsDefinition(["red", "blue", "green"])

    @asset(partitions_def=parts, io_manager_key="m")
    def colors(context) -> str:
        return f"value-{context.partition_key}"

    got: dict[str, Any] = {}

    @asset(
        ins={
            "colors": AssetIn(
                input_manager_key="m",
                metadata={
                    "wandb_artifact_configuration": {
                        "partitions": {"*": {"version": "v0"}, "blue": {"alias": "latest"}}
                    }
                },
            )
        }
    )
    def read_all(colors: dict[str, Any]) -> None:
        got.update(colors)

    iom = make_io_manager()
    for pk in ("red", "blue", "green"):
        assert materialize([colors], partition_key=pk, resources={"m": iom}).success
    assert materialize([colors], partition_key="blue", resources={"m": iom}).success
    assert materialize(
        [colors.to_source_asset(), read_all], resources={"m": iom}, selection=[read_all]
    ).success
    assert got == {"red": "value-red", "blue": "value-blue", "green": "value-green"}


def test_daily_and_multi_partitions(key_store: Any, make_io_manager: Any, store_dir: Path) -> None:
    daily = DailyPartitionsDefinition(start_date="2023-01-01", end_date="2023-01-03")
    multi = MultiPartitionsDefinition(
        {"date": daily, "color": StaticPartitionsDefinition(["red", "blue"])}
    )

    @asset(partitions_def=daily, io_manager_key="m")
    def by_day(context) -> str:
        return context.partition_key

    @asset(partitions_def=multi, io_manager_key="m")
    def by_both(context) -> str:
        return str(context.partition_key)

    iom = make_io_manager()
    assert materialize([by_day], partition_key="2023-01-02", resources={"m": iom}).success
    key = MultiPartitionKey({"date": "2023-01-01", "color": "red"})
    assert materialize([by_both], partition_key=key, resources={"m": iom}).success
    names = {av.name for av in LocalArtifactStore(store_dir).list_versions()}
    assert names == {"by_day.2023-01-02", "by_both.red-2023-01-01"}


def test_source_asset_and_op_reads(key_store: Any, make_io_manager: Any) -> None:
    @op(
        out=Out(
            metadata={"wandb_artifact_configuration": {"name": "external_thing"}},
            io_manager_key="m",
        )
    )
    def write_op() -> list[int]:
        return [4, 5]

    got: dict[str, Any] = {}

    @op(
        ins={
            "artifact": In(
                metadata={"wandb_artifact_configuration": {"name": "external_thing"}},
                input_manager_key="m",
            )
        }
    )
    def read_op(artifact: list[int]) -> None:
        got["op"] = artifact

    @job(resource_defs={"m": make_io_manager()})
    def writer() -> None:
        write_op()

    @job(resource_defs={"m": make_io_manager()})
    def reader() -> None:
        read_op()

    assert writer.execute_in_process().success
    assert reader.execute_in_process().success
    assert got["op"] == [4, 5]

    external = SourceAsset(key=AssetKey("external_thing"), io_manager_key="m")

    @asset
    def use_external(external_thing: list[int]) -> None:
        got["asset"] = external_thing

    assert materialize(
        [external, use_external], resources={"m": make_io_manager()}, selection=[use_external]
    ).success
    assert got["asset"] == [4, 5]


def test_op_output_without_name_is_an_error(key_store: Any, make_io_manager: Any) -> None:
    @op(out=Out(io_manager_key="m"))
    def nameless() -> int:
        return 1

    @job(resource_defs={"m": make_io_manager()})
    def j() -> None:
        nameless()

    result = j.execute_in_process(raise_on_error=False)
    assert not result.success
    assert "needs 'name'" in failure_text(result)


def test_sklearn_goes_to_skops_and_explicit_serializer_wins(
    key_store: Any, make_io_manager: Any, store_dir: Path
) -> None:
    from sklearn.linear_model import LogisticRegression

    @asset(io_manager_key="m")
    def model() -> Any:
        return LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])

    @asset(
        io_manager_key="m",
        metadata={"wandb_artifact_configuration": {"serialization_module": {"name": "joblib"}}},
    )
    def model_joblib() -> Any:
        return LogisticRegression().fit([[0.0], [1.0]], [0, 1])

    got: dict[str, Any] = {}

    @asset(
        ins={
            "model": AssetIn(input_manager_key="m"),
            "model_joblib": AssetIn(input_manager_key="m"),
        }
    )
    def predict(model: Any, model_joblib: Any) -> None:
        got["p"] = list(model.predict([[0.0], [3.0]]))
        got["q"] = list(model_joblib.predict([[0.0], [1.0]]))

    assert materialize([model, model_joblib, predict], resources={"m": make_io_manager()}).success
    assert got == {"p": [0, 1], "q": [0, 1]}
    store = LocalArtifactStore(store_dir)
    assert "output.skops" in store.resolve("team", "proj", "model", alias="latest").files
    assert "output.joblib" in store.resolve("team", "proj", "model_joblib", alias="latest").files


def test_env_signing_key(
    workdir: Path, make_io_manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from dagster_wandb_secure.core.algorithms import format_hmac_key
    from dagster_wandb_secure.core.keys import KeyStore

    KeyStore.open(workdir / "keys")  # an empty key store: the env key signs and verifies
    monkeypatch.setenv("DWS_SIGNING_KEY", format_hmac_key(os.urandom(32)))
    got: dict[str, Any] = {}

    @asset(io_manager_key="m")
    def env_signed() -> str:
        return "ok"

    @asset(ins={"env_signed": AssetIn(input_manager_key="m")})
    def env_reader(env_signed: str) -> None:
        got["v"] = env_signed

    iom = make_io_manager(signing_key={"env": "DWS_SIGNING_KEY"})
    result = materialize([env_signed, env_reader], resources={"m": iom})
    assert result.success and got["v"] == "ok"
    meta = _materialization_metadata(result, "env_signed")
    assert str(meta["signing_key_id"]).startswith("env-")
    assert meta["signature_algorithm"] == "hmac-sha256"


def test_invalid_io_manager_config_fails_before_anything(
    key_store: Any, make_io_manager: Any
) -> None:
    @asset(io_manager_key="m")
    def thing() -> int:
        return 1

    for bad in ({"run_id": "a/b"}, {"store": "s3"}, {"cache_duration_in_minutes": -1}):
        with pytest.raises(Exception) as info:
            materialize([thing], resources={"m": make_io_manager(**bad)})
        assert "WandbArtifactsIOManagerError" in _chain(info.value)


def test_signature_asset_checks(key_store: Any, make_io_manager: Any, store_dir: Path) -> None:
    from dagster_wandb_secure import build_signature_asset_checks

    @asset(io_manager_key="m")
    def checked() -> list[int]:
        return [1]

    checks = build_signature_asset_checks([checked], io_manager_key="m")
    result = materialize([checked, *checks], resources={"m": make_io_manager()})
    evals = result.get_asset_check_evaluations()
    assert len(evals) == 1 and evals[0].passed

    # tamper with the stored payload: the check fails, naming the reason
    av = LocalArtifactStore(store_dir).resolve("team", "proj", "checked", alias="latest")
    payload = av.root / "output.pickle"
    payload.chmod(0o600)
    data = bytearray(payload.read_bytes())
    data[-1] ^= 1
    payload.write_bytes(bytes(data))
    result = materialize(
        [checked, *checks],
        resources={"m": make_io_manager()},
        selection=AssetSelection.all_asset_checks(),
    )
    evals = result.get_asset_check_evaluations()
    assert len(evals) == 1 and not evals[0].passed
    assert evals[0].metadata["error"].value == "TamperedPayloadError"


def test_wandb_config_errors(key_store: Any, make_io_manager: Any) -> None:
    with pytest.raises(WandbArtifactsIOManagerError):
        from dagster_wandb_secure.artifacts.config import validate_write_config

        validate_write_config({"serialization_module": {"name": "pickle", "x": 1}}, where="t")


@pytest.mark.parametrize("digest", ["sha256", "blake3"])
def test_digest_algorithm_setting(
    key_store: Any, make_io_manager: Any, store_dir: Path, digest: str
) -> None:
    """``digest_algorithm`` picks the signed payload digest of the envelope and the manifest."""
    from dagster_wandb_secure.core.envelope import read_header_unverified

    @asset(io_manager_key="m")
    def hashed() -> dict[str, int]:
        return {"a": 1}

    @asset(ins={"hashed": AssetIn(input_manager_key="m")})
    def reader(hashed: dict[str, int]) -> None:
        assert hashed == {"a": 1}

    result = materialize([hashed, reader], resources={"m": make_io_manager(digest_algorithm=digest)})
    assert result.success
    meta = _materialization_metadata(result, "hashed")
    assert meta["payload_digest_alg"] == digest and len(meta[f"payload_{digest}"]) == 64
    av = LocalArtifactStore(store_dir).resolve("team", "proj", "hashed", alias="latest")
    for name in ("output.pickle", MANIFEST_NAME):
        assert read_header_unverified(av.root / name)["header"]["digest_alg"] == digest


def test_digest_algorithm_setting_refuses_unknown(key_store: Any, make_io_manager: Any) -> None:
    @asset(io_manager_key="m")
    def hashed() -> int:
        return 1

    result = materialize(
        [hashed], resources={"m": make_io_manager(digest_algorithm="md5")}, raise_on_error=False
    )
    assert not result.success
