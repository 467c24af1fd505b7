"""Settings a user mistypes are refused by name (with the closest valid one), every setting the
UI shows is described, and the W&B start-up timeout is configurable (issue 15, items 4, 9, 10)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import ValidationError

from dagster import AssetIn, DagsterInvalidConfigError, ResourceDefinition, asset, materialize
from dagster_wandb_secure import WandbArtifactsIOManager, wandb_artifacts_io_manager
from dagster_wandb_secure.core.errors import ConfigurationError
from dagster_wandb_secure.resources import WandbResource
from dagster_wandb_secure.stores import wandb_run


def test_misspelled_io_manager_setting_names_the_closest_key() -> None:
    with pytest.raises(ValidationError) as info:
        WandbArtifactsIOManager(key_stor="keys")  # type: ignore[call-arg]
    text = str(info.value)
    assert "'key_stor'" in text and "did you mean 'key_store'?" in text


def test_misspelled_resource_setting_names_the_closest_key() -> None:
    with pytest.raises(ValidationError) as info:
        WandbResource(api_key="x", hots="https://example.invalid")  # type: ignore[call-arg]
    assert "did you mean 'host'?" in str(info.value)


def test_legacy_config_refuses_unknown_keys() -> None:
    @asset
    def a() -> int:
        return 1

    with pytest.raises(DagsterInvalidConfigError) as info:
        materialize(
            [a],
            resources={
                "io_manager": wandb_artifacts_io_manager.configured({"key_stor": "x"}),
                "wandb_resource": ResourceDefinition.none_resource(),
                "wandb_config": ResourceDefinition.none_resource(),
            },
        )
    assert "key_stor" in str(info.value) and "key_store" in str(info.value)


@pytest.mark.parametrize("cls", [WandbArtifactsIOManager, WandbResource])
def test_every_setting_has_a_description(cls: Any) -> None:
    for name, field in cls.model_fields.items():
        assert field.description, f"{cls.__name__}.{name} has no description"
    schema = cls.to_config_schema().as_field().config_type  # what the UI's resource page shows
    for name, field in schema.fields.items():
        assert field.description, f"{cls.__name__} config field {name} has no description"


def test_connect_timeout_defaults_to_30_s_and_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(wandb_run.CONNECT_TIMEOUT_ENV, raising=False)
    assert wandb_run.connect_timeout() == 30.0
    monkeypatch.setenv(wandb_run.CONNECT_TIMEOUT_ENV, "5")
    assert wandb_run.connect_timeout() == 5.0
    monkeypatch.setenv(wandb_run.CONNECT_TIMEOUT_ENV, "soon")
    with pytest.raises(ConfigurationError, match=wandb_run.CONNECT_TIMEOUT_ENV):
        wandb_run.connect_timeout()


def test_unreachable_wandb_logs_the_host_and_gives_a_typed_error(
    tmp_path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The W&B server double refuses to start a run the way wandb does when the host cannot be
    reached (a ``wandb.errors.CommError`` after ``init_timeout``)."""
    import wandb

    from dagster_wandb_secure.stores.base import StoreError
    from dagster_wandb_secure.stores.wandb_store import WandbArtifactStore

    seen: dict[str, Any] = {}

    class Unreachable:
        errors = wandb.errors

        def init(self, **kwargs: Any) -> Any:
            seen.update(kwargs)
            raise wandb.errors.CommError("Run initialization has timed out after 7.0 sec.")

    monkeypatch.setenv(wandb_run.CONNECT_TIMEOUT_ENV, "7")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    store = WandbArtifactStore(
        entity="team", project="proj", base_dir=tmp_path, api_key="x" * 40,
        host="https://wandb.example.invalid", mode="online", sdk=Unreachable(),
    )
    with caplog.at_level(logging.INFO, logger="dagster_wandb_secure"), pytest.raises(
        StoreError
    ) as info:
        store._wandb.ensure()
    assert seen["settings"]["init_timeout"] == 7.0
    assert "connecting to W&B at https://wandb.example.invalid" in caplog.text
    assert "W&B at https://wandb.example.invalid" in str(info.value)
    assert "WANDB_MODE=offline" in str(info.value)


def test_output_metadata_has_no_empty_run_url(key_store, store_dir, workdir) -> None:
    seen: dict[str, Any] = {}

    @asset(io_manager_key="m", metadata={"wandb_artifact_configuration": {"type": "dataset"}})
    def out() -> list[int]:
        return [1]

    @asset(ins={"out": AssetIn(input_manager_key="m")})
    def reader(out: list[int]) -> None:
        seen["v"] = out

    iom = WandbArtifactsIOManager(
        store="local", key_store=str(workdir / "keys"), local_store_dir=str(store_dir)
    )
    result = materialize([out, reader], resources={"m": iom})
    assert result.success and seen["v"] == [1]
    [mat] = result.asset_materializations_for_node("out")
    assert "wandb_run_url" not in mat.metadata
