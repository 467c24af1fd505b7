"""Everything an IO manager call needs, opened once: key store, signing key, policy, store.

Store selection lives here, in one function (``select_store_kind`` / ``open_store``):
``store="auto"`` means the embedded local store when no W&B API key is configured, the W&B store
otherwise (which runs offline when ``WANDB_MODE=offline``). Nothing here logs in to W&B or opens
a network connection: the W&B store decides itself when (and whether) it needs the server.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import KeyStoreError, NoSigningKeyError
from ..core.keys import KEYSTORE_FILE, KeyStore
from ..core.ledger_api import open_ledger, ping
from ..core.policy import Policy
from ..stores import open_store as _open
from ..stores import select_store_kind as _select
from ..stores.wandb_run import CONNECT_TIMEOUT_ENV, connect_timeout
from .config import Settings, WandbArtifactsIOManagerError

if TYPE_CHECKING:
    from ..core.keys import KeyStore
    from ..core.ledger_api import LedgerBackend
    from ..core.policy import Policy
    from ..stores.base import ArtifactStore

DEFAULT_LOCAL_ENTITY = "local"
DEFAULT_PROJECT = "uncategorized"


@dataclass(frozen=True)
class WandbCredentials:
    """What the W&B resource provides: the API key (may be empty) and host."""

    api_key: str | None = None
    host: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.api_key)


@dataclass
class Session:
    settings: Settings
    key_store: KeyStore
    policy: Policy
    store: ArtifactStore
    store_kind: str  # "local" or "wandb"
    entity: str
    project: str
    base_dir: Path
    signing_key_id: str | None  # None: the key store's primary at signing time
    credentials: WandbCredentials

    @property
    def qualified_project(self) -> str:
        """``entity/project``, as bound into every signed context."""
        return f"{self.entity}/{self.project}"

    @property
    def location(self) -> str:
        """Where this session reads and writes, in one line (logged once per IO manager)."""
        keys = f"key store {self.key_store.path}"
        if self.store_kind == "local":
            return f"local store at {getattr(self.store, 'root', '?')}; {keys}"
        if self.offline:
            return (
                f"W&B store {self.qualified_project} (offline, files under {self.base_dir}); "
                f"{keys}"
            )

        host = self.credentials.host or os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
        return (
            f"W&B store {self.qualified_project}: connecting to W&B at {host} on first use "
            f"(start-up timeout {connect_timeout():.0f} s, ${CONNECT_TIMEOUT_ENV}); "
            f"{keys}"
        )

    @property
    def offline(self) -> bool:
        return self.store_kind == "local" or os.environ.get("WANDB_MODE") in {"offline", "dryrun"}


def select_store_kind(settings: Settings, credentials: WandbCredentials) -> str:
    """``local`` or ``wandb`` for the configured ``store`` setting (the stores package decides)."""

    return _select(settings.store, api_key=credentials.api_key)


def build_policy(settings: Settings) -> Policy:

    policy = Policy.default()
    overrides: dict[str, Any] = {}
    if settings.allowed_serializers is not None:
        overrides["allowed_serializers"] = frozenset(settings.allowed_serializers)
    if settings.allowed_algorithms is not None:
        overrides["allowed_algorithms"] = frozenset(settings.allowed_algorithms)
    if settings.max_payload_bytes is not None:
        overrides["max_payload_bytes"] = settings.max_payload_bytes
    if not overrides:
        return policy
    try:
        return dataclasses.replace(policy, **overrides)
    except (TypeError, ValueError) as exc:
        raise WandbArtifactsIOManagerError(f"invalid policy setting: {exc}") from exc


def open_ledger_for(settings: Settings) -> LedgerBackend | None:
    """The configured shared ledger, connected now (``None``: the key store's own SQLite file).

    Called when the IO manager is set up, so an unreachable PostgreSQL fails the step before the
    asset's compute runs, with a ``LedgerUnavailableError`` naming the host (never the password).
    ``ledger_mode: read-only``: the shared ledger layered over the key store's own SQLite file
    (``core/ledger_layered.py``)."""
    if not settings.ledger:
        return None

    ledger = open_ledger(
        settings.ledger, settings.resolved_key_store(), mode=settings.ledger_mode
    )
    ping(ledger)
    return ledger


def close_session(session: Session) -> None:
    """Release a session's open files at the end of a run: the key store's descriptor and
    ledger connection, and a local store's index connection of this thread (both reopen on a
    later use). A W&B store's run is left to its own lifecycle (``WandbArtifactStore.close``)."""
    session.key_store.close()
    if session.store_kind == "local":
        closer = getattr(session.store, "close", None)
        if closer is not None:
            closer()


def open_existing_key_store(path: Path) -> KeyStore:
    """Open the key store at ``path`` without creating anything: a missing folder (or one with
    no key store file) is a ``KeyStoreError`` naming the path and the command that creates it."""

    path = Path(path).expanduser()
    if not path.exists() or (path.is_dir() and not (path / KEYSTORE_FILE).exists()):
        raise KeyStoreError(
            f"no key store at {path.absolute()}",
            hint=f"create one with `dagster-wandb-secure keys init -k {path}` (it also makes "
            "the first signing key), or point key_store / --key-store at the existing one",
        )
    return KeyStore.open(path, create=False)


def open_key_store(
    settings: Settings, *, ledger: LedgerBackend | None = None
) -> tuple[KeyStore, str | None]:
    """Open the key store (never creating it; the configured ledger attached) and resolve which
    key signs (``None`` = the primary at signing time)."""
    key_store, key_id = _open_signing(settings)
    if ledger is None and settings.ledger:
        ledger = open_ledger_for(settings)
    if ledger is not None:
        key_store.attach_ledger(ledger)
    return key_store, key_id


def _open_signing(settings: Settings) -> tuple[KeyStore, str | None]:
    """The key store (never created, no ledger attached) and the configured signing key id."""
    key_store = open_existing_key_store(settings.resolved_key_store())
    ref = settings.signing_key
    if ref.env_var:
        if not os.environ.get(ref.env_var):
            raise WandbArtifactsIOManagerError(
                f"signing_key names the environment variable {ref.env_var}, which is not set",
                hint=f"export {ref.env_var} with the key material, or configure a key id",
            )
        return key_store, key_store.load_env_key(ref.env_var)
    if ref.key_id:
        key_store.get(ref.key_id)  # UnknownKeyError names the key id
        return key_store, ref.key_id
    return key_store, None


def preflight(settings: Settings) -> Path:
    """Check, before any compute, what a write will need: the key store exists and is safe,
    and the configured signing key (or the store's primary, when it has one) can sign.

    A key store with no primary and no configured key passes (a job may only read), and so
    does a configured public key (a verify-only reader); a write then fails with
    ``NoSigningKeyError``. Returns the key store's path."""
    path = settings.resolved_key_store()
    key_store, key_id = _open_signing(settings)
    try:
        if key_id is not None and not key_store.get(key_id).has_private:
            pass  # a public key configured on purpose: a verify-only reader
        elif key_id is not None or _has_primary(key_store):
            key_store.signer(key_id)
    except NoSigningKeyError as exc:
        raise NoSigningKeyError(
            exc.reason,
            key_id=exc.key_id,
            hint=f"make a new signing key with `dagster-wandb-secure keys rotate -k {path}`, "
            f"or see `dagster-wandb-secure keys list -k {path}`",
        ) from None
    finally:
        key_store.close()
    return key_store.path


def _has_primary(key_store: KeyStore) -> bool:
    try:
        key_store.primary()
    except NoSigningKeyError:
        return False
    return True


def open_store(
    kind: str,
    settings: Settings,
    *,
    credentials: WandbCredentials,
    entity: str | None,
    project: str | None,
    base_dir: Path,
    local_root: Path,
    run_id: str | None,
    run_name: str | None,
) -> ArtifactStore:
    """Construct the artifact store of ``kind`` through the stores package's one selector."""

    return _open(
        kind,
        local_dir=local_root,
        entity=entity,
        project=project,
        api_key=credentials.api_key,
        host=credentials.host,
        base_dir=base_dir,
        run_id=run_id,
        run_name=run_name,
        run_tags=tuple(settings.run_tags),
        cache_duration=timedelta(minutes=settings.cache_duration_in_minutes),
    )


def open_session(
    settings: Settings,
    *,
    credentials: WandbCredentials,
    entity: str | None,
    project: str | None,
    dagster_run_id: str | None,
    ledger: LedgerBackend | None = None,
) -> Session:
    """Open the key store, the policy and the store for one IO manager."""
    kind = select_store_kind(settings, credentials)
    base_dir = settings.resolved_base_dir()
    local_root = settings.resolved_local_store_dir()
    policy = build_policy(settings)
    key_store, key_id = open_key_store(settings, ledger=ledger)
    run_id = settings.run_id or dagster_run_id
    run_name = settings.run_name or (
        f"dagster-run-{dagster_run_id[:8]}" if dagster_run_id else None
    )
    if kind == "local":
        entity = entity or DEFAULT_LOCAL_ENTITY
        project = project or DEFAULT_PROJECT
    store = open_store(
        kind,
        settings,
        credentials=credentials,
        entity=entity,
        project=project,
        base_dir=base_dir,
        local_root=local_root,
        run_id=run_id,
        run_name=run_name,
    )
    return Session(
        settings=settings,
        key_store=key_store,
        policy=policy,
        store=store,
        store_kind=kind,
        entity=entity or str(getattr(store, "entity", "") or DEFAULT_LOCAL_ENTITY),
        project=project or str(getattr(store, "project", "") or DEFAULT_PROJECT),
        base_dir=base_dir,
        signing_key_id=key_id,
        credentials=credentials,
    )


__all__ = [
    "Session",
    "WandbCredentials",
    "close_session",
    "build_policy",
    "open_existing_key_store",
    "open_key_store",
    "open_ledger_for",
    "open_session",
    "preflight",
    "open_store",
    "select_store_kind",
]
