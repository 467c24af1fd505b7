"""The W&B resource: credentials for the W&B store, and the wandb SDK for user code.

``WandbResource`` is the current Dagster style (``ConfigurableResource`` with ``api_key`` and
``host``); ``wandb_resource`` is the upstream ``@resource`` form, usable exactly as before
(``wandb_resource.configured({"api_key": {"env": "WANDB_API_KEY"}})``), a thin adapter over it.

Neither logs in nor contacts a server when it is initialized: with ``WANDB_MODE=offline`` or the
local store, nothing ever does. ``login()`` and ``api`` are there for user code (and the W&B store
when it really goes online); ``api`` builds ``wandb.Api()`` only on first use.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import ConfigDict, PrivateAttr, model_validator
from pydantic import Field as Setting

from dagster import ConfigurableResource, Field, InitResourceContext, StringSource, resource

from .artifacts.config import unknown_keys_message
from .artifacts.session import WandbCredentials
from .core.errors import ConfigurationError

DEFAULT_HOST = "https://api.wandb.ai"
WANDB_CLOUD_HOST = DEFAULT_HOST  # upstream's name for it


def _normalize_host(host: str | None) -> str:
    host = (host or DEFAULT_HOST).strip()
    return host.rstrip("/") or DEFAULT_HOST


def refuse_unknown_settings(cls: type[Any], data: Any) -> Any:
    """A pydantic ``model_validator(mode="before")`` body: an unknown setting is an error
    naming the closest valid one (``key_stor`` -> ``key_store``), never silently ignored."""
    if isinstance(data, Mapping):
        allowed = list(cls.model_fields)
        message = unknown_keys_message(cls.__name__, list(data), allowed)
        if message:
            raise ValueError(message)
    return data


class WandbResource(ConfigurableResource):
    """W&B credentials and a lazily built API client.

    ``api_key``: the W&B API key (use ``EnvVar("WANDB_API_KEY")``). ``host``: the W&B server
    (default the public cloud)."""

    model_config = ConfigDict(extra="forbid")

    api_key: str = Setting(
        description="W&B API key; use EnvVar('WANDB_API_KEY'). Empty: the IO manager's "
        "store='auto' uses the local store"
    )
    host: str = Setting(DEFAULT_HOST, description="W&B server API host (default: the public cloud)")

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_settings(cls, data: Any) -> Any:
        return refuse_unknown_settings(cls, data)

    _api: Any = PrivateAttr(default=None)

    def credentials(self) -> WandbCredentials:
        return WandbCredentials(api_key=self.api_key or None, host=_normalize_host(self.host))

    @property
    def sdk(self) -> Any:
        import wandb

        return wandb

    def login(self) -> bool:
        """Log in to W&B with the configured key and host (never called at initialization)."""
        import wandb

        return bool(
            wandb.login(key=self.api_key, host=_normalize_host(self.host), anonymous="never")
        )

    @property
    def api(self) -> Any:
        """A ``wandb.Api`` built on first use (it contacts the server when built)."""
        if self._api is None:
            import wandb

            self._api = wandb.Api(
                api_key=self.api_key, overrides={"base_url": _normalize_host(self.host)}
            )
        return self._api


class WandbResourceHandle(Mapping[str, Any]):
    """What the legacy ``wandb_resource`` provides: ``{"sdk": wandb, "api": wandb.Api}`` as
    upstream, but ``api`` is built only when first looked up, plus the credentials."""

    def __init__(self, resource_: WandbResource) -> None:
        self._resource = resource_

    @property
    def api_key(self) -> str:
        return self._resource.api_key

    @property
    def host(self) -> str:
        return _normalize_host(self._resource.host)

    def credentials(self) -> WandbCredentials:
        return self._resource.credentials()

    def login(self) -> bool:
        return self._resource.login()

    def __getitem__(self, key: str) -> Any:
        if key == "sdk":
            return self._resource.sdk
        if key == "api":
            return self._resource.api
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(("sdk", "api"))

    def __len__(self) -> int:
        return 2

    def __repr__(self) -> str:
        return f"WandbResourceHandle(host={self.host!r})"


@resource(
    config_schema={
        "api_key": Field(StringSource, description="W&B API key"),
        "host": Field(
            StringSource,
            is_required=False,
            default_value=DEFAULT_HOST,
            description="W&B server API host (default: the public cloud)",
        ),
    },
    description="W&B credentials and SDK (dagster-wandb-secure; never logs in at start-up).",
)
def wandb_resource(context: InitResourceContext) -> WandbResourceHandle:
    config = context.resource_config
    return WandbResourceHandle(
        WandbResource(api_key=config["api_key"], host=config.get("host") or DEFAULT_HOST)
    )


def credentials_of(value: Any) -> WandbCredentials:
    """Credentials from whatever is bound to ``wandb_resource`` (new or legacy form)."""
    if value is None:
        return WandbCredentials()
    getter = getattr(value, "credentials", None)
    if callable(getter):
        return getter()
    if isinstance(value, Mapping) and "api_key" in value:
        return WandbCredentials(api_key=value.get("api_key"), host=value.get("host"))
    # Never fall back to "no credentials" (which would quietly switch to the local store).
    raise ConfigurationError(
        f"the resource bound to 'wandb_resource' is a {type(value).__name__}, which holds no W&B "
        "credentials",
        hint="bind dagster_wandb_secure's wandb_resource (or WandbResource) as 'wandb_resource'",
    )


__all__ = [
    "DEFAULT_HOST",
    "WandbResource",
    "WandbResourceHandle",
    "credentials_of",
    "refuse_unknown_settings",
    "wandb_resource",
]
