"""An unrecognised object bound as ``wandb_resource`` is an error, never "no credentials"
(which would silently switch the IO manager to the local store)."""

from __future__ import annotations

import pytest

from dagster_wandb_secure.core.errors import ConfigurationError
from dagster_wandb_secure.resources import WandbResource, credentials_of


def test_unknown_resource_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="holds no W&B credentials"):
        credentials_of(object())


def test_known_forms_give_credentials() -> None:
    assert credentials_of(None).api_key is None
    assert credentials_of({"api_key": "k"}).api_key == "k"
    assert credentials_of(WandbResource(api_key="k2")).api_key == "k2"
