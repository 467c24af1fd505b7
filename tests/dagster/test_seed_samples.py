"""Every code sample of W&B's own guide for the upstream Dagster integration, with only the import
changed from ``dagster_wandb`` to ``dagster_wandb_secure`` (README.md, "Migrating from
`dagster-wandb`", step 1).

Each sample is wrapped in a ``materialize`` / ``execute_in_process`` call. The guide's resources
are used as written (``wandb_resource.configured({"api_key": {"env": "WANDB_API_KEY"}})``,
``make_values_resource(entity=str, project=str)``, ``wandb_artifacts_io_manager``), so with an
API key in the environment the store is W&B in offline mode (``WANDB_MODE=offline``): nothing
leaves the machine, artifacts go to wandb's offline run and its local mirror. The key store is
the default ``./keys`` of the test's working folder. Where a sample uses a name it does not
define (``my_op``, ``my_daily_partitioned_asset``, writers of the artifacts it reads), the test
defines the smallest such thing, marked ``# (test scaffolding)``.
"""

import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy

from dagster import (
    AssetIn,
    AssetKey,
    AssetOut,
    DailyPartitionsDefinition,
    In,
    OpExecutionContext,
    Out,
    SourceAsset,
    TimeWindowPartitionMapping,
    asset,
    job,
    load_assets_from_package_module,
    make_values_resource,
    materialize,
    multi_asset,
    op,
    repository,
    with_resources,
)
from dagster_wandb_secure import wandb_artifacts_io_manager, wandb_resource

RUN_CONFIG = {
    "resources": {"wandb_config": {"config": {"entity": "my_entity", "project": "my_project"}}}
}


def guide_resources() -> dict[str, Any]:
    """The resources of the guide's @repository sample (cache duration 60 minutes)."""
    return {
        "wandb_config": make_values_resource(
            entity=str,
            project=str,
        ),
        "wandb_resource": wandb_resource.configured({"api_key": {"env": "WANDB_API_KEY"}}),
        "wandb_artifacts_manager": wandb_artifacts_io_manager.configured(
            {"cache_duration_in_minutes": 60}  # 파일을 한 시간 동안만 캐시합니다
        ),
    }


def run(assets: list[Any], **kwargs: Any) -> Any:
    result = materialize(assets, resources=guide_resources(), run_config=RUN_CONFIG, **kwargs)
    assert result.success
    return result


def test_sample_job_configuration(key_store: Any, dummy_api_key: str) -> None:
    @op(out=Out(metadata={"wandb_artifact_configuration": {"name": "my_op_artifact"}}))
    def my_op() -> list[int]:  # (test scaffolding)
        return [1, 2, 3]

    @job(
        resource_defs={
            "wandb_config": make_values_resource(
                entity=str,
                project=str,
            ),
            "wandb_resource": wandb_resource.configured({"api_key": {"env": "WANDB_API_KEY"}}),
            "io_manager": wandb_artifacts_io_manager,
        }
    )
    def simple_job_example():
        my_op()

    config = {
        "resources": {"wandb_config": {"config": {"entity": "my_entity", "project": "my_project"}}}
    }
    assert simple_job_example.execute_in_process(run_config=config).success


def test_sample_repository_configuration(
    key_store: Any, dummy_api_key: str, tmp_path: Path, monkeypatch: Any
) -> None:
    package = tmp_path / "pkg" / "seed_repo_assets"  # (test scaffolding: the `assets` package)
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            from dagster import asset

            @asset(
                metadata={"wandb_artifact_configuration": {"type": "dataset"}},
                io_manager_key="wandb_artifacts_manager",
            )
            def repo_dataset():
                return [1, 2, 3]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    import seed_repo_assets as assets

    @repository
    def my_repository():
        return [
            *with_resources(
                load_assets_from_package_module(assets),
                resource_defs={
                    "wandb_config": make_values_resource(
                        entity=str,
                        project=str,
                    ),
                    "wandb_resource": wandb_resource.configured(
                        {"api_key": {"env": "WANDB_API_KEY"}}
                    ),
                    "wandb_artifacts_manager": wandb_artifacts_io_manager.configured(
                        {"cache_duration_in_minutes": 60}  # 파일을 한 시간 동안만 캐시합니다
                    ),
                },
                resource_config_by_key={
                    "wandb_config": {
                        "config": {
                            "entity": "my_entity",  # 이를 W&B 엔터티로 바꾸세요
                            "project": "my_project",  # 이를 W&B 프로젝트로 바꾸세요
                        }
                    }
                },
            ),
        ]

    job_def = my_repository.get_implicit_job_def_for_assets([AssetKey("repo_dataset")])
    assert job_def is not None
    assert job_def.execute_in_process().success
    sys.modules.pop("seed_repo_assets", None)


def test_sample_simple_asset_and_python_object(key_store: Any, dummy_api_key: str) -> None:
    @asset(
        name="my_artifact",
        metadata={
            "wandb_artifact_arguments": {
                "type": "dataset",
            }
        },
        io_manager_key="wandb_artifacts_manager",
    )
    def create_dataset():
        return [1, 2, 3]  # 이것은 아티팩트에 저장됩니다

    result = run([create_dataset])
    meta = result.asset_materializations_for_node("my_artifact")[0].metadata
    assert meta["wandb_artifact_type"].value == "dataset"
    assert meta["signature_status"].value == "signed"
    assert meta["wandb_store"].value == "wandb"  # the W&B store, offline (WANDB_MODE=offline)


def test_sample_wandb_object(key_store: Any, dummy_api_key: str) -> None:
    import wandb

    @asset(
        name="my_artifact",
        metadata={
            "wandb_artifact_arguments": {
                "type": "dataset",
            }
        },
        io_manager_key="wandb_artifacts_manager",
    )
    def create_dataset_in_table():
        return wandb.Table(columns=["a", "b", "c"], data=[[1, 2, 3]])

    run([create_dataset_in_table])


def test_sample_wandb_artifact(key_store: Any, dummy_api_key: str) -> None:
    import wandb

    MY_ASSET = "my_asset"

    @asset(
        name=MY_ASSET,
        io_manager_key="wandb_artifacts_manager",
    )
    def create_artifact():
        artifact = wandb.Artifact(MY_ASSET, "dataset")
        table = wandb.Table(columns=["a", "b", "c"], data=[[1, 2, 3]])
        artifact.add(table, "my_table")
        return artifact

    run([create_artifact])


def _write_my_artifact() -> None:  # (test scaffolding: the artifact the read samples read)
    @asset(name="my_artifact", io_manager_key="wandb_artifacts_manager")
    def writer():
        return {"content": 42}

    run([writer])


def test_sample_read_from_op(key_store: Any, dummy_api_key: str) -> None:
    _write_my_artifact()
    seen: list[Any] = []

    # The guide passes io_manager_key="wandb_artifacts_manager" to @op; current Dagster has no
    # such @op argument (a TypeError with or without this package), and a root input is read
    # through an input manager: the one change is In(input_manager_key=...).
    @op(
        ins={
            "artifact": In(
                metadata={
                    "wandb_artifact_configuration": {
                        "name": "my_artifact",
                    }
                },
                input_manager_key="wandb_artifacts_manager",
            )
        },
    )
    def read_artifact(context, artifact):
        context.log.info(artifact)
        seen.append(artifact)

    @job(
        resource_defs={
            "wandb_config": make_values_resource(entity=str, project=str),
            "wandb_resource": wandb_resource.configured({"api_key": {"env": "WANDB_API_KEY"}}),
            "wandb_artifacts_manager": wandb_artifacts_io_manager,
        }
    )
    def reader_job():
        read_artifact()

    assert reader_job.execute_in_process(run_config=RUN_CONFIG).success
    assert seen == [{"content": 42}]


def test_sample_read_from_other_asset(key_store: Any, dummy_api_key: str) -> None:
    @asset(name="parent_dagster_asset_name", io_manager_key="wandb_artifacts_manager")
    def parent():  # (test scaffolding)
        return "parent content"

    seen: list[Any] = []

    @asset(
        name="my_asset",
        ins={
            "artifact": AssetIn(
                # 입력 인수의 이름을 변경하고 싶지 않다면 'key'를 제거할 수 있습니다
                key="parent_dagster_asset_name",
                input_manager_key="wandb_artifacts_manager",
            )
        },
    )
    def read_artifact(context, artifact):
        context.log.info(artifact)
        seen.append(artifact)

    run([parent, read_artifact])
    assert seen == ["parent content"]


def test_sample_read_outside_dagster_source_asset(key_store: Any, dummy_api_key: str) -> None:
    _write_my_artifact()
    seen: list[Any] = []

    my_artifact = SourceAsset(
        key=AssetKey("my_artifact"),  # W&B 아티팩트의 이름
        description="Dagster 외부에서 생성된 아티팩트",
        io_manager_key="wandb_artifacts_manager",
    )

    @asset
    def read_artifact(context, my_artifact):
        context.log.info(my_artifact)
        seen.append(my_artifact)

    run([my_artifact, read_artifact], selection=[read_artifact])
    assert seen == [{"content": 42}]


def test_sample_read_patterns_get_get_path_whole(
    key_store: Any, dummy_api_key: str, tmp_path: Path
) -> None:
    import wandb

    # (test scaffolding: the artifacts the three read patterns read)
    @asset(name="my_artifact_with_table", io_manager_key="wandb_artifacts_manager")
    def with_table():
        artifact = wandb.Artifact("my_artifact_with_table", "dataset")
        artifact.add(wandb.Table(columns=["a", "b", "c"], data=[[1, 2, 3]]), "my_table")
        return artifact

    source = tmp_path / "name_of_file"
    source.write_text("file content")

    @asset(
        name="my_artifact_with_file",
        io_manager_key="wandb_artifacts_manager",
        metadata={
            "wandb_artifact_configuration": {
                "add_files": [{"local_path": str(source), "name": "name_of_file"}]
            }
        },
    )
    def with_file():
        return {"also": "an object"}

    @asset(name="my_artifact", io_manager_key="wandb_artifacts_manager")
    def plain():
        artifact = wandb.Artifact("my_artifact", "dataset")
        artifact.add(wandb.Table(columns=["x"], data=[[9]]), "t")
        return artifact

    run([with_table, with_file, plain])
    seen: dict[str, Any] = {}

    @asset(
        ins={
            "table": AssetIn(
                key="my_artifact_with_table",
                metadata={
                    "wandb_artifact_configuration": {
                        "get": "my_table",
                    }
                },
                input_manager_key="wandb_artifacts_manager",
            )
        }
    )
    def get_table(context, table):
        context.log.info(table.get_column("a"))
        seen["column"] = table.get_column("a")

    @asset(
        ins={
            "path": AssetIn(
                key="my_artifact_with_file",
                metadata={
                    "wandb_artifact_configuration": {
                        "get_path": "name_of_file",
                    }
                },
                input_manager_key="wandb_artifacts_manager",
            )
        }
    )
    def get_path(context, path):
        context.log.info(path)
        seen["path"] = Path(path).read_text()

    @asset(
        ins={
            "artifact": AssetIn(
                key="my_artifact",
                input_manager_key="wandb_artifacts_manager",
            )
        },
    )
    def get_artifact(context, artifact):
        context.log.info(artifact.name)
        seen["name"] = artifact.name

    sources = [with_table.to_source_asset(), with_file.to_source_asset(), plain.to_source_asset()]
    readers = [get_table, get_path, get_artifact]
    run([*sources, *readers], selection=readers)
    assert seen == {"column": [1], "path": "file content", "name": "my_artifact:v0"}


def test_sample_joblib_serialized_model(key_store: Any, dummy_api_key: str) -> None:
    @asset(
        name="my_joblib_serialized_model",
        compute_kind="Python",
        metadata={
            "wandb_artifact_configuration": {
                "type": "model",
                "serialization_module": {"name": "joblib"},
            }
        },
        io_manager_key="wandb_artifacts_manager",
    )
    def create_model_serialized_with_joblib():
        # 이것은 실제 ML 모델이 아니지만 pickle 모듈로는 불가능할 것입니다
        return lambda x, y: x + y

    @asset(
        name="inference_result_from_joblib_serialized_model",
        compute_kind="Python",
        ins={
            "my_joblib_serialized_model": AssetIn(
                input_manager_key="wandb_artifacts_manager",
            )
        },
        metadata={
            "wandb_artifact_configuration": {
                "type": "results",
            }
        },
        io_manager_key="wandb_artifacts_manager",
    )
    def use_model_serialized_with_joblib(
        context: OpExecutionContext, my_joblib_serialized_model
    ):
        inference_result = my_joblib_serialized_model(1, 2)
        context.log.info(inference_result)  # 출력: 3
        return inference_result

    result = run([create_model_serialized_with_joblib, use_model_serialized_with_joblib])
    assert result.output_for_node("inference_result_from_joblib_serialized_model") == 3


def _zipmap_op() -> Any:
    from onnx.reference.op_run import OpRun

    class ZipMap(OpRun):
        op_domain = "ai.onnx.ml"

        def _run(self, x, classlabels_int64s=None, classlabels_strings=None):  # type: ignore[no-untyped-def]
            labels = classlabels_int64s if classlabels_int64s is not None else classlabels_strings
            return ([dict(zip(labels, row)) for row in x],)

    return ZipMap


def test_sample_onnx(key_store: Any, dummy_api_key: str) -> None:
    # onnxruntime is replaced by onnx.reference.ReferenceEvaluator (pure Python, no telemetry
    # lookup); only the `rt.InferenceSession` usage changes, marked below.
    from onnx.reference import ReferenceEvaluator
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    @multi_asset(
        compute_kind="Python",
        outs={
            "my_onnx_model": AssetOut(
                metadata={
                    "wandb_artifact_configuration": {
                        "type": "model",
                    }
                },
                io_manager_key="wandb_artifacts_manager",
            ),
            "my_test_set": AssetOut(
                metadata={
                    "wandb_artifact_configuration": {
                        "type": "test_set",
                    }
                },
                io_manager_key="wandb_artifacts_manager",
            ),
        },
        group_name="onnx_example",
    )
    def create_onnx_model():
        # https://onnx.ai/sklearn-onnx/에서 영감을 받았습니다

        # 모델 훈련
        iris = load_iris()
        X, y = iris.data, iris.target
        X_train, X_test, y_train, y_test = train_test_split(X, y)
        clr = RandomForestClassifier(n_estimators=5)  # (fewer trees: keeps the test fast)
        clr.fit(X_train, y_train)

        # ONNX 형식으로 변환
        initial_type = [("float_input", FloatTensorType([None, 4]))]
        onx = convert_sklearn(clr, initial_types=initial_type)

        # 아티팩트(모델 + 테스트 세트) 작성
        return onx.SerializeToString(), {"X_test": X_test, "y_test": y_test}

    @asset(
        name="experiment_results",
        compute_kind="Python",
        ins={
            "my_onnx_model": AssetIn(
                input_manager_key="wandb_artifacts_manager",
            ),
            "my_test_set": AssetIn(
                input_manager_key="wandb_artifacts_manager",
            ),
        },
        group_name="onnx_example",
    )
    def use_onnx_model(context, my_onnx_model, my_test_set):
        # https://onnx.ai/sklearn-onnx/에서 영감을 받았습니다

        # ONNX Runtime을 사용하여 예측 계산
        # (changed: ReferenceEvaluator instead of rt.InferenceSession; the reference runtime
        # has no ZipMap operator, so the test supplies a minimal one)
        sess = ReferenceEvaluator(my_onnx_model, new_ops=[_zipmap_op()])
        input_name = sess.input_names[0]
        label_name = sess.output_names[0]
        pred_onx = sess.run(
            [label_name], {input_name: my_test_set["X_test"].astype(numpy.float32)}
        )[0]
        context.log.info(pred_onx)
        return pred_onx

    result = run([create_onnx_model, use_onnx_model])
    predictions = result.output_for_node("experiment_results")
    assert len(predictions) > 0


def test_sample_partitions(key_store: Any, dummy_api_key: str) -> None:
    days = DailyPartitionsDefinition(start_date="2023-01-01", end_date="2023-02-01")

    @asset(partitions_def=days, io_manager_key="wandb_artifacts_manager")
    def my_daily_partitioned_asset(context):  # (test scaffolding)
        return f"content of {context.partition_key}"

    for day in ("2023-01-01", "2023-01-02", "2023-01-03"):
        run([my_daily_partitioned_asset], partition_key=day)
    seen: dict[str, Any] = {}

    # (the guide's readers rely on the default IO manager; the test makes the guide's
    # IO manager the default one)
    @asset(
        compute_kind="wandb",
        ins={"my_daily_partitioned_asset": AssetIn()},
        output_required=False,
    )
    def read_all_partitions(context, my_daily_partitioned_asset):
        for partition, content in my_daily_partitioned_asset.items():
            context.log.info(f"partition={partition}, content={content}")
        seen["all"] = dict(my_daily_partitioned_asset)

    @asset(
        partitions_def=DailyPartitionsDefinition(start_date="2023-01-01", end_date="2023-02-01"),
        compute_kind="wandb",
        ins={
            "my_daily_partitioned_asset": AssetIn(
                partition_mapping=TimeWindowPartitionMapping(start_offset=-1)
            )
        },
        output_required=False,
    )
    def read_specific_partitions(context, my_daily_partitioned_asset):
        for partition, content in my_daily_partitioned_asset.items():
            context.log.info(f"partition={partition}, content={content}")
        seen["specific"] = dict(my_daily_partitioned_asset)

    resources = guide_resources()
    resources["io_manager"] = resources["wandb_artifacts_manager"]
    source = SourceAsset(
        key=AssetKey("my_daily_partitioned_asset"),
        partitions_def=days,
        io_manager_key="wandb_artifacts_manager",
    )
    # (only three days were written: the "all partitions" reader sees a 3-day upstream)
    written = SourceAsset(
        key=AssetKey("my_daily_partitioned_asset"),
        partitions_def=DailyPartitionsDefinition(start_date="2023-01-01", end_date="2023-01-04"),
        io_manager_key="wandb_artifacts_manager",
    )
    result = materialize(
        [written, read_all_partitions],
        resources=resources,
        run_config=RUN_CONFIG,
        selection=[read_all_partitions],
    )
    assert result.success
    assert seen["all"] == {
        "2023-01-01": "content of 2023-01-01",
        "2023-01-02": "content of 2023-01-02",
        "2023-01-03": "content of 2023-01-03",
    }
    result = materialize(
        [source, read_specific_partitions],
        resources=resources,
        run_config=RUN_CONFIG,
        selection=[read_specific_partitions],
        partition_key="2023-01-03",
    )
    assert result.success
    assert seen["specific"] == {
        "2023-01-02": "content of 2023-01-02",
        "2023-01-03": "content of 2023-01-03",
    }


def test_sample_best_practice_run_id(key_store: Any, dummy_api_key: str) -> None:
    @op(out=Out(metadata={"wandb_artifact_configuration": {"name": "resumable_output"}}))
    def produce() -> int:  # (test scaffolding)
        return 7

    @job(
        resource_defs={
            "io_manager": wandb_artifacts_io_manager.configured(
                {"wandb_run_id": "my_resumable_run_id"}
            ),
            # (test scaffolding: the resources the IO manager requires, as in the guide)
            "wandb_config": make_values_resource(entity=str, project=str),
            "wandb_resource": wandb_resource.configured({"api_key": {"env": "WANDB_API_KEY"}}),
        }
    )
    def resumable_job():
        produce()

    result = resumable_job.execute_in_process(run_config=RUN_CONFIG)
    assert result.success
    mats = [e for e in result.all_events if e.event_type_value == "HANDLED_OUTPUT"]
    assert mats
