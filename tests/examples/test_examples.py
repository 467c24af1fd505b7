"""Every example in examples/ materialized on the embedded local store (no W&B account), with
its results and its signature metadata checked, plus the refusals the examples promise."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dagster import DagsterInstance, ExecuteInProcessResult
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.stores.local import LocalArtifactStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
Loader = Callable[[str], ModuleType]
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}

# every example module and the test that runs it
COVERED = {
    "simple_assets",
    "artifacts",
    "joblib_model",
    "skops_model",
    "onnx_model",
    "partitions",
    "op_jobs",
    "two_teams_writer",
    "two_teams_reader",
}


def run(module: ModuleType, job: str, **kwargs: Any) -> ExecuteInProcessResult:
    result = module.defs.resolve_job_def(job).execute_in_process(run_config=QUIET, **kwargs)
    assert result.success
    return result


def meta(result: ExecuteInProcessResult, node: str, key: str | None = None) -> dict[str, Any]:
    for m in result.asset_materializations_for_node(node):
        if key is None or m.asset_key.to_user_string() == key:
            return {k: v.value for k, v in m.metadata.items()}
    raise AssertionError(f"no materialization of {key or node}")


def assert_signed(metadata: dict[str, Any], kid: str, serializer: str) -> None:
    assert metadata["signature_status"] == "signed"
    assert metadata["signing_key_id"] == kid
    assert metadata["signature_algorithm"] == "ed25519"
    assert metadata["serializer"] == serializer
    assert metadata["wandb_store"] == "local"


def failure_text(result: ExecuteInProcessResult) -> str:
    parts = []
    for event in result.get_step_failure_events():
        error = event.event_specific_data.error
        while error is not None:
            parts.append(error.message)
            error = error.cause
    return "\n".join(parts)


def test_every_example_is_covered() -> None:
    found = {p.stem for p in EXAMPLES.glob("*.py") if p.stem not in {"__init__", "common"}}
    assert found == COVERED


def test_simple_assets(signing_key: str, load_example: Loader) -> None:
    ex = load_example("simple_assets")
    result = run(ex, "simple_job")
    assert result.output_for_node("my_list_doubled") == [2, 4, 6]
    assert_signed(meta(result, "my_first_list"), signing_key, "pickle")
    assert_signed(meta(result, "my_list_doubled"), signing_key, "pickle")
    assert (Path(os.environ["DWS_EXAMPLES_HOME"]) / ".gitignore").read_text().endswith("*\n")


def test_missing_key_is_a_clear_error(examples_home: Path, load_example: Loader) -> None:
    ex = load_example("simple_assets")
    result = ex.defs.resolve_job_def("simple_job").execute_in_process(
        run_config=QUIET, raise_on_error=False
    )
    assert not result.success
    # no key store: the step fails at resource set-up, before its compute, naming the command
    # that creates it
    text = "\n".join(
        str(getattr(e.event_specific_data, "error", "") or "") + (e.message or "")
        for e in result.all_events
        if e.is_failure or e.event_type_value == "RESOURCE_INIT_FAILURE"
    )
    assert "KeyStoreError" in text and "keys init -k" in text, text
    assert not (examples_home / "keys").exists()  # and nothing was created


def test_artifacts(signing_key: str, load_example: Loader, examples_home: Path) -> None:
    ex = load_example("artifacts")
    first = run(ex, "artifacts_job")
    second = run(ex, "artifacts_job")  # v1: `latest` and `baseline` move, `v0` stays
    assert_signed(meta(first, "iris_classes"), signing_key, "wandb-files")
    assert meta(second, "iris_classes")["wandb_artifact_version"] == "v1"
    assert second.output_for_node("class_names") == ["setosa", "versicolor", "virginica"]
    assert second.output_for_node("csv_line_count") == 4
    summary = second.output_for_node("artifact_summary")
    assert summary["name"] == "iris_classes:v1"
    assert {"latest", "baseline", "iris-classes"} <= set(summary["aliases"])
    assert summary["notes"].startswith("Iris classes")
    assert summary["files"] == ["classes_table.table.json", "docs/notes.txt", "labels/classes.csv"]
    assert second.output_for_node("first_version_rows") == 3
    assert second.output_for_node("baseline_rows") == 3

    # a byte changed in the stored version is refused by every reader of it
    store = LocalArtifactStore(examples_home / "store")
    av = store.resolve("examples", "dagster-wandb-secure", "iris_classes", alias="latest")
    target = av.root / "labels" / "classes.csv"
    os.chmod(target, 0o600)
    target.write_text(target.read_text().replace("setosa", "SETOSA"))
    result = ex.defs.resolve_job_def("artifacts_job").execute_in_process(
        run_config=QUIET, raise_on_error=False, op_selection=["csv_line_count"]
    )
    assert not result.success
    assert "TamperedPayloadError" in failure_text(result)


def test_joblib_model(signing_key: str, load_example: Loader) -> None:
    ex = load_example("joblib_model")
    result = run(ex, "joblib_model_job")
    assert_signed(meta(result, "joblib_iris_model"), signing_key, "joblib")
    assert result.output_for_node("joblib_inference")["accuracy"] > 0.9


def test_skops_model(signing_key: str, load_example: Loader) -> None:
    ex = load_example("skops_model")
    result = run(ex, "skops_model_job")
    assert_signed(meta(result, "skops_iris_pipeline"), signing_key, "skops")
    assert result.output_for_node("skops_prediction") == [0, 2]


def test_onnx_model(signing_key: str, load_example: Loader) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("skl2onnx")
    ex = load_example("onnx_model")
    result = run(ex, "onnx_model_job")
    node = "onnx_model_and_test_set"
    assert_signed(meta(result, node, "iris_onnx_model"), signing_key, "onnx")
    assert_signed(meta(result, node, "iris_test_set"), signing_key, "pickle")
    out = result.output_for_node("onnx_inference")
    assert out["rows"] == 30 and out["accuracy"] > 0.8
    assert "onnxruntime" not in sys.modules  # it looks up a telemetry host


def test_partitions(signing_key: str, load_example: Loader, examples_home: Path) -> None:
    ex = load_example("partitions")
    with DagsterInstance.ephemeral() as instance:
        for day in ex.DAYS.get_partition_keys():
            result = run(ex, "daily_job", partition_key=day, instance=instance)
        assert_signed(meta(result, "daily_rows"), signing_key, "pickle")
        assert meta(result, "daily_tables")["wandb_artifact_id"].endswith("daily_tables.2024-01-03:v0")
        growth = run(ex, "growth_job", partition_key="2024-01-03", instance=instance)
        assert growth.output_for_node("daily_growth") == 1
        for key in ex.DAYS_X_COLORS.get_partition_keys():
            run(ex, "color_days_job", partition_key=key, instance=instance)

        # 2024-01-02 again: its v1 is then made unreadable; the reader is pinned to v0 for it
        run(ex, "daily_job", partition_key="2024-01-02", instance=instance)
        store = LocalArtifactStore(examples_home / "store")
        v1 = store.resolve("examples", "dagster-wandb-secure", "daily_tables.2024-01-02",
                           version="v1")
        tables = list(v1.root.rglob("*.table.json"))
        assert tables
        for path in tables:
            os.chmod(path, 0o600)
            path.write_text("{}")

        result = run(ex, "partition_readers_job", instance=instance)
    assert result.output_for_node("all_daily_rows") == 306
    summary = result.output_for_node("color_days_summary")
    assert len(summary) == 6 and summary[0] == "blue on 2024-01-01"
    assert result.output_for_node("table_sizes") == {"2024-01-01": 1, "2024-01-02": 2,
                                                      "2024-01-03": 3}
    names = {av.name for av in store.list_versions()}
    assert "color_days.blue-2024-01-01" in names  # multi-partition keys join with "-"


def test_op_jobs(signing_key: str, load_example: Loader, examples_home: Path) -> None:
    ex = load_example("op_jobs")
    result = run(ex, "simple_job")
    assert result.output_for_node("total") == 6
    for fruit in ("apple", "pear"):
        assert run(ex, "partitioned_job", partition_key=fruit).output_for_node(
            "read_partition"
        ) == fruit
    names = sorted(av.name for av in LocalArtifactStore(examples_home / "store").list_versions())
    assert names == ["my_op_list", "my_op_total", "op_partitioned.apple", "op_partitioned.pear"]


def _pem_pair() -> tuple[str, str]:
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private_pem, public_pem


def test_two_teams(
    examples_home: Path, load_example: Loader, monkeypatch: pytest.MonkeyPatch, marker: Path
) -> None:
    private_pem, public_pem = _pem_pair()
    monkeypatch.setenv("TEAM_A_SIGNING_KEY", private_pem)
    monkeypatch.setenv("TEAM_A_PUBLIC_KEY", public_pem)
    for team in ("team_a_keys", "team_b_keys"):  # `keys init --no-key`: a ledger, no key
        KeyStore.open(examples_home / team)
    writer = load_example("two_teams_writer")
    reader = load_example("two_teams_reader")

    written = run(writer, "team_a_job")
    kid = meta(written, "team_a_features")["signing_key_id"]
    assert kid.startswith("env-")
    report = run(reader, "team_b_job").output_for_node("team_b_report")
    assert report == {"sepal_length": 6.7, "petal_length": 5.2}
    # the private key was never written anywhere; team B holds no private key at all
    for folder in (examples_home / "team_a_keys", examples_home / "team_b_keys"):
        assert not any((folder / "private").iterdir())
    assert private_pem.strip().splitlines()[1] not in "".join(
        p.read_text(errors="replace") for p in examples_home.rglob("*") if p.is_file()
    )

    # team B cannot publish: its key is public-only
    from dagster import materialize

    refused = materialize(
        [writer.team_a_features], resources=dict(reader.defs.resources), raise_on_error=False
    )
    assert not refused.success
    assert "KeyStoreError" in failure_text(refused) or "NoSigningKeyError" in failure_text(
        refused
    )

    # someone else with write access to the store publishes under team A's name: refused
    rogue_private, _ = _pem_pair()
    monkeypatch.setenv("TEAM_A_SIGNING_KEY", rogue_private)
    run(load_example("two_teams_writer"), "team_a_job")
    result = reader.defs.resolve_job_def("team_b_job").execute_in_process(
        run_config=QUIET, raise_on_error=False
    )
    assert not result.success
    text = failure_text(result)
    assert "UnknownKeyError" in text and "team_a_features" in text
    assert not marker.exists()
