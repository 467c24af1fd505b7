"""The IO manager: Dagster outputs to signed W&B artifacts, and verified artifacts to inputs.

``WandbArtifactsIOManager`` is the current Dagster style (``ConfigurableIOManager``);
``wandb_artifacts_io_manager`` is the upstream ``@io_manager`` form (config keys ``run_name``,
``run_id``, ``run_tags``, ``base_dir``, ``cache_duration_in_minutes`` plus the security ones;
required resources ``wandb_resource`` and ``wandb_config``). Both are thin shells over
``ArtifactIOEngine``, which validates every configuration before opening anything, then
delegates to ``publishing`` (write) and ``verification`` (read).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import ConfigDict, PrivateAttr, model_validator
from pydantic import Field as Setting

from dagster import Any as DagsterAny
from dagster import (
    ConfigurableIOManager,
    Field,
    InitResourceContext,
    InputContext,
    IOManager,
    MetadataValue,
    Noneable,
    OutputContext,
    StringSource,
    get_dagster_logger,
    io_manager,
)

from .artifacts.binding import read_bound
from .artifacts.config import (
    LinkChoice,
    ReadConfig,
    Settings,
    WandbArtifactsIOManagerError,
    WriteConfig,
    artifact_configuration,
    validate_read_config,
    validate_settings,
    validate_write_config,
)
from .artifacts.delivery import deliver
from .artifacts.log_lines import signature_line, signature_metadata
from .artifacts.naming import (
    artifact_name,
    artifact_name_for_asset_key,
    asset_key_path_string,
    default_run_name,
)
from .artifacts.private_copies import PrivateCopies
from .artifacts.publishing import Published, publish_output
from .artifacts.registry import link_verified, load_registered, registry_path_for_input
from .artifacts.session import (
    Session,
    WandbCredentials,
    close_session,
    open_ledger_for,
    open_session,
    preflight,
)
from .artifacts.target import Target
from .artifacts.verification import verify_version
from .core.digests import get_digest
from .core.errors import SecureArtifactError
from .resources import WandbResource, credentials_of, refuse_unknown_settings
from .types import Config as _UpstreamConfig

SETTING_KEYS = tuple(Settings.__dataclass_fields__)


class ArtifactIOEngine(IOManager):
    """The IO manager proper, shared by the new and the legacy form."""

    def __init__(
        self,
        settings: Settings,
        *,
        credentials: WandbCredentials,
        entity: str | None,
        project: str | None,
    ) -> None:
        self.settings = settings
        self.credentials = credentials
        self.entity = entity
        self.project = project
        self._session: Session | None = None
        self._ledger: Any = None
        self._lock = threading.Lock()
        self._privates: list[PrivateCopies] = []
        self._swept: list[PrivateCopies] = []  # privates whose cache root was swept this run

    def connect_ledger(self) -> None:
        """Reach a configured shared ledger now (resource setup), so an unreachable one fails
        the step before the asset's compute runs."""
        with self._lock:
            if self._ledger is None:
                self._ledger = open_ledger_for(self.settings)

    # --- plumbing -------------------------------------------------------------------------

    def session(self, dagster_run_id: str | None) -> Session:
        with self._lock:
            if self._session is None:
                self._session = open_session(
                    self.settings,
                    credentials=self.credentials,
                    entity=self.entity,
                    project=self.project,
                    dagster_run_id=dagster_run_id,
                    ledger=self._ledger,
                )
                get_dagster_logger("dagster_wandb_secure").info(
                    f"dagster-wandb-secure: {self._session.location}"
                )
            return self._session

    def preflight(self) -> None:
        """Fail before compute when a write could not be signed (``session.preflight``)."""
        preflight(self.settings)

    def private_copies(self, session: Session, run_id: str | None) -> PrivateCopies:
        private = PrivateCopies.for_process(
            session.base_dir, run_id, self.settings.cache_duration_in_minutes
        )
        with self._lock:
            if private not in self._privates:
                self._privates.append(private)
        return private

    def close(self) -> None:
        """End of the run (resource teardown): release what this engine holds per run (the
        private copy folders' locks, the key store's and the local store's open files, the
        shared ledger's pool), so a long-lived process does not gather them per run. The
        engine stays usable: a later call opens a new session."""
        with self._lock:
            privates, self._privates = self._privates, []
            self._swept = []
            session, self._session = self._session, None
            ledger, self._ledger = self._ledger, None
        for private in privates:
            private.release()
        if session is not None:
            close_session(session)
        if ledger is not None:
            ledger.close()

    def _cleanup(self, private: PrivateCopies) -> None:
        """Sweep the private copy root of other processes' expired folders, once per run and
        root (it lists the whole root; at every output and input it was O(folders) per asset).
        Nothing is trusted from the sweep: it only removes folders unused for
        ``cache_duration_in_minutes`` whose owner's lock is free."""
        with self._lock:
            if any(p is private for p in self._swept):
                return
            self._swept.append(private)
        private.cleanup()

    # --- writing --------------------------------------------------------------------------

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        where = _describe_output(context)
        label = _label(context)
        try:
            raw = artifact_configuration(context.definition_metadata, where=where)
            config = validate_write_config(raw, where=where)
        except SecureArtifactError as exc:
            raise exc.with_location(artifact=label or _raw_name(context)) from None
        if obj is None:
            context.log.warning(
                f"{where} returned None: nothing is written to W&B (an artifact needs content)"
            )
            return
        target = output_target(context, config, where)
        run_id = context.run_id
        try:
            session = self.session(run_id)
            private = self.private_copies(session, run_id)
            published = publish_output(
                session,
                obj,
                config=config,
                target=target,
                dagster_run_id=run_id,
                staging_root=private.folder / "writes",
                warn=context.log.warning,
            )
        except SecureArtifactError as exc:
            raise exc.with_location(artifact=target.name) from None
        av = published.version
        context.log.info(
            signature_line(
                "signed",
                f"{av.name}:{av.version_label}",
                published.key_id,
                published.algorithm,
                published.sequence,
            )
        )
        meta = self._output_metadata(session, published, run_id)
        if config.link is not None:
            try:
                meta["wandb_registry_link"] = self._link_output(
                    session, target, published, config.link, private, run_id, context
                )
            except SecureArtifactError as exc:
                raise exc.with_location(artifact=target.name) from None
        context.add_output_metadata(meta)
        self._cleanup(private)

    def _link_output(
        self,
        session: Session,
        target: Target,
        published: Published,
        link: LinkChoice,
        private: PrivateCopies,
        run_id: str,
        context: OutputContext,
    ) -> str:
        """``link`` in the write configuration: verify the version just published (as any
        reader would), then link it."""

        verified = verify_version(
            session,
            target,
            ReadConfig(version=published.version.version_label),
            private=private,
            dagster_run_id=run_id,
        )
        made = link_verified(verified, link.target_path, link.aliases)
        context.log.info(f"linked {verified.label} to {made.name} aliases {list(made.aliases)}")
        return made.name

    def _output_metadata(self, session: Session, p: Published, run_id: str) -> dict[str, Any]:
        av = p.version
        extra = dict(av.extra or {})
        wandb_run_id = str(extra.get("run_id") or self.settings.run_id or run_id)
        run_name = str(extra.get("run_name") or self.settings.run_name or default_run_name(run_id))
        url = extra.get("url") or av.root.absolute().as_uri()
        run_url = extra.get("run_url")
        meta: dict[str, Any] = {
            "dagster_run_id": run_id,
            "wandb_artifact_id": str(extra.get("id") or av.qualified_name),
            "wandb_artifact_type": av.type,
            "wandb_artifact_version": av.version_label,
            "wandb_artifact_size": int(extra.get("size") or p.size),
            "wandb_artifact_url": MetadataValue.url(str(url)),
            "wandb_entity": av.entity,
            "wandb_project": av.project,
            "wandb_run_id": wandb_run_id,
            "wandb_run_name": run_name,
            "wandb_run_path": f"{av.entity}/{av.project}/{wandb_run_id}",
            "wandb_store": session.store_kind,
            "signature_status": "signed",
            "signing_key_id": p.key_id,
            "signature_algorithm": p.algorithm,
            get_digest(p.digest_alg).header_field: p.payload_sha256,
            "payload_digest_alg": p.digest_alg,
            "serializer": p.serializer or "wandb-files",
            "signed_sequence": p.sequence,
        }
        if run_url:  # unknown (local store, offline run): no row rather than an empty one
            meta["wandb_run_url"] = MetadataValue.url(str(run_url))
        return meta

    # --- reading --------------------------------------------------------------------------

    def load_input(self, context: InputContext) -> Any:
        where = _describe_input(context)
        try:
            raw = artifact_configuration(context.definition_metadata, where=where)
            read = validate_read_config(raw, where=where)
        except SecureArtifactError as exc:
            raise exc.with_location(artifact=_label(context) or _raw_name(context)) from None
        run_id = _input_run_id(context)
        session = self.session(run_id)
        registered = registry_path_for_input(
            list(context.asset_key.path) if context.has_asset_key else None,
            read.name,
            session.entity,
        )
        if registered is not None:
            return self._load_registered(context, session, registered, read, run_id)
        base, asset_key, strict = input_base_name(context, read, where)
        private = self.private_copies(session, run_id)
        try:
            if context.has_asset_key and context.has_asset_partitions:
                keys = list(context.asset_partition_keys)
                out: dict[str, Any] = {}
                for key in keys:
                    target = Target(
                        name=artifact_name(base, key), partition=str(key), asset_key=asset_key
                    )
                    part_read = read.for_partition(str(key))
                    out[str(key)] = read_bound(
                        lambda t, r=part_read, k=str(key): self._load_one(  # type: ignore[misc]
                            session, t, r, private, run_id, True, context=context, partition=k
                        ),
                        target,
                        strict=strict,
                    )
                if len(out) == 1:
                    return next(iter(out.values()))
                return out
            # an unpartitioned asset is read without a partition, whatever the run's key is
            partition = None if context.has_asset_key else _op_partition(context)
            target = Target(
                name=artifact_name(base, partition), partition=partition, asset_key=asset_key
            )
            return read_bound(
                lambda t: self._load_one(
                    session, t, read, private, run_id, asset_key is not None, context=context
                ),
                target,
                strict=strict,
            )
        finally:
            self._cleanup(private)

    def _load_registered(
        self,
        context: InputContext,
        session: Session,
        registered: Any,
        read: ReadConfig,
        run_id: str | None,
    ) -> Any:
        """An input naming a registry collection: the link statement, then the original."""

        private = self.private_copies(session, run_id)
        try:
            value, verified, link = load_registered(
                session,
                registered,
                read,
                private=private,
                dagster_run_id=run_id,
                warn=context.log.warning,
            )
            context.log.info(
                f"verified link {link.name} signed by {link.key_id} ({link.algorithm}) "
                f"-> {verified.label}"
            )
            _log_verified(context, verified)
            return value
        finally:
            self._cleanup(private)

    def _load_one(
        self,
        session: Session,
        target: Target,
        read: ReadConfig,
        private: PrivateCopies,
        run_id: str | None,
        bind_asset_key: bool,
        *,
        context: InputContext | None = None,
        partition: str | None = None,
    ) -> Any:

        verified = verify_version(
            session,
            target,
            read,
            private=private,
            dagster_run_id=run_id,
            bind_asset_key=bind_asset_key,
            whole_content=read.get_path is None and read.get is None,
        )
        if context is not None:
            _log_verified(context, verified)
        warn = context.log.warning if context is not None else _no_warning
        return deliver(verified, read, warn=warn, partition=partition)


# --- Dagster context helpers ------------------------------------------------------------


def _no_warning(_: str) -> None:
    return None


def _log_verified(context: InputContext, verified: Any) -> None:
    """One INFO line per verified read, and the same facts as input metadata."""
    seq, digest = verified.sequence, verified.manifest_envelope_digest
    context.log.info(
        signature_line("verified", verified.label, verified.key_id, verified.algorithm, seq, digest)
    )
    try:
        context.add_input_metadata(
            signature_metadata(verified.label, verified.key_id, verified.algorithm, seq, digest),
            description=f"verified {verified.label}",
        )
    except Exception:  # noqa: BLE001, S110 - e.g. an op input Dagster keeps no metadata for
        pass


def _label(context: OutputContext | InputContext) -> str | None:
    """The artifact name for error messages, before the configuration is validated."""
    if context.has_asset_key:
        return artifact_name_for_asset_key(list(context.asset_key.path))
    return None


def _raw_name(context: OutputContext | InputContext) -> str | None:
    meta = context.definition_metadata or {}
    for key in ("wandb_artifact_configuration", "wandb_artifact_arguments"):
        conf = getattr(meta.get(key), "value", meta.get(key))
        if isinstance(conf, Mapping) and isinstance(conf.get("name"), str):
            return str(conf["name"])
    return None


def _describe_output(context: OutputContext) -> str:
    if context.has_asset_key:
        return f"asset {context.asset_key.to_user_string()!r}"
    try:
        return f"output {context.name!r} of op {context.op_def.name!r}"
    except Exception:  # noqa: BLE001 - only for a label
        return "output"


def _describe_input(context: InputContext) -> str:
    label = f"input {context.name!r}" if context.has_input_name else "input"
    if context.has_asset_key:
        return f"{label} (asset {context.asset_key.to_user_string()!r})"
    return label


def output_target(context: OutputContext, config: WriteConfig, where: str) -> Target:
    """Artifact name, partition and asset key of an output."""
    if context.has_asset_key:
        path = list(context.asset_key.path)
        base = artifact_name_for_asset_key(path)
        if config.name is not None and config.name != base:
            raise WandbArtifactsIOManagerError(
                f"{where}: 'name' {config.name!r} differs from the name derived from the asset "
                f"key ({base!r}); for assets the artifact name is the asset key",
                artifact=config.name,
            )
        asset_key: str | None = asset_key_path_string(path)
    else:
        if config.name is None:
            raise WandbArtifactsIOManagerError(
                f"{where}: an op output needs 'name' in wandb_artifact_configuration"
            )
        base, asset_key = config.name, None
    partition_key = None
    if context.has_asset_key and context.has_asset_partitions:
        keys = list(context.asset_partition_keys)
        if len(keys) != 1:
            raise WandbArtifactsIOManagerError(
                f"{where}: writing {len(keys)} partitions in one step is not supported; "
                "materialize one partition per run",
                artifact=base,
            )
        partition_key: Any = keys[0]
    elif not context.has_asset_key and context.has_partition_key:
        # an op output in a partitioned run; an unpartitioned ASSET keeps its own name even in a
        # partitioned run (the run's key belongs to other assets), as on the read side
        partition_key = context.partition_key
    partition = None if partition_key is None else str(partition_key)
    try:
        name = artifact_name(base, partition_key)
    except ValueError as exc:
        raise WandbArtifactsIOManagerError(f"{where}: {exc}", artifact=base) from None
    return Target(name=name, partition=partition, asset_key=asset_key)


def input_base_name(
    context: InputContext, read: ReadConfig, where: str
) -> tuple[str, str | None, bool]:
    """(base artifact name, asset key string, whether that asset key is bound strictly).

    An asset input always binds its full asset key, whether or not the upstream asset is in the
    run: strictly when the run's asset graph produces it (a Dagster-written asset), otherwise
    (``SourceAsset``, or an asset this job does not materialize) the version must be signed for
    this asset key or for no asset key at all, never another one (``binding.read_bound``). An op
    input binds no asset key (it names its artifact itself)."""
    if context.has_asset_key:
        path = list(context.asset_key.path)
        base = artifact_name_for_asset_key(path)
        if read.name is not None and read.name != base:
            raise WandbArtifactsIOManagerError(
                f"{where}: do not set 'name' for an asset input; the artifact name comes from "
                f"the asset key ({base!r})",
                artifact=read.name,
            )
        return base, asset_key_path_string(path), _is_materializable(context)
    name = read.name
    if name is None and context.upstream_output is not None:
        upstream = artifact_configuration(
            context.upstream_output.definition_metadata, where=where
        )
        name = upstream.get("name")
    if not name:
        raise WandbArtifactsIOManagerError(
            f"{where}: an op input needs 'name' in wandb_artifact_configuration"
        )
    return str(name), None, False


def _is_materializable(context: InputContext) -> bool:
    """Whether the run's asset graph materializes the upstream asset (its writer then signed
    exactly its asset key, and nothing else is accepted).

    Otherwise (a ``SourceAsset`` naming an artifact made outside Dagster, by an op or adopted by
    the CLI; or an upstream asset this job does not produce) the asset key is still bound, but a
    version signed with no asset key is accepted too. Not knowing means strict (fails closed)."""
    try:
        graph = context.step_context.job_def.asset_layer.asset_graph
        return bool(graph.get(context.asset_key).is_materializable)
    except Exception:  # noqa: BLE001 - unknown: strict, which fails closed
        return True


def _op_partition(context: InputContext) -> str | None:
    """The run's partition key for an op input (no fallback: a failure here is not hidden)."""
    if context.has_partition_key:
        return str(context.partition_key)
    return None


def _input_run_id(context: InputContext) -> str | None:
    try:
        return context.step_context.run_id
    except Exception:  # noqa: BLE001 - e.g. build_input_context without a run
        return None


# --- the current style ------------------------------------------------------------------


class WandbArtifactsIOManager(ConfigurableIOManager):
    """Stores outputs as signed W&B artifacts and verifies them before loading.

    Upstream keys: ``run_name``, ``run_id``, ``run_tags``, ``base_dir``,
    ``cache_duration_in_minutes``. Security keys: ``signing_key`` (a key id, ``"env:VAR"`` or
    ``{"env": "VAR"}``), ``key_store`` (default ``keys``), ``store`` (``auto``/``local``/
    ``wandb``), ``local_store_dir``, ``default_serialization`` (``auto``),
    ``allowed_serializers``, ``allowed_algorithms``, ``max_payload_bytes``, ``ledger`` (unset:
    ``ledger.sqlite3`` in the key store; a ``postgresql://`` URL, e.g. from an ``EnvVar``: the
    shared ledger, reached at setup), ``require_ledger_record``, ``ledger_mode``. ``wandb_resource``,
    ``entity`` and ``project`` replace the legacy ``wandb_resource``/``wandb_config`` resources."""

    model_config = ConfigDict(extra="forbid")

    run_name: str | None = Setting(
        None, description="W&B run name (default: dagster-run-<first 8 characters of the run id>)"
    )
    run_id: str | None = Setting(
        None, description="W&B run id to resume (default: the Dagster run id)"
    )
    run_tags: list[str] | None = Setting(None, description="extra tags for the W&B run")
    base_dir: str | None = Setting(
        None,
        description="folder for the local store, W&B run files and private copies (default: "
        "$DAGSTER_HOME, else the working directory)",
    )
    cache_duration_in_minutes: int | None = Setting(
        None, description="keep verified private copies this long (default 30 days)"
    )
    signing_key: Any | None = Setting(
        None,
        description="key id in the key store, 'env:VAR' or {'env': 'VAR'} holding key material "
        "(default: the key store's primary key)",
    )
    key_store: str | None = Setting(
        None,
        description="key store folder (default ./keys); create it with "
        "`dagster-wandb-secure keys init -k PATH`",
    )
    store: str | None = Setting(
        None,
        description="auto (W&B when an API key is configured, else local), local or wandb",
    )
    local_store_dir: str | None = Setting(
        None,
        description="local store folder (default <base_dir>/wandb-secure/store); with W&B "
        "offline: the mirror folder",
    )
    default_serialization: str | None = Setting(
        None, description="serializer for outputs that name none (default auto)"
    )
    allowed_serializers: list[str] | None = Setting(
        None, description="serializers a read may use (default: the safe ones)"
    )
    allowed_algorithms: list[str] | None = Setting(
        None, description="signature algorithms a read accepts (default: all supported)"
    )
    max_payload_bytes: int | None = Setting(
        None, description="refuse payloads larger than this many bytes"
    )
    digest_algorithm: str | None = Setting(
        None, description="payload digest of new artifacts: blake3 (default) or sha256 (FIPS)"
    )
    ledger: str | None = Setting(
        None,
        description="shared ledger: a postgresql:// URL (use an EnvVar; the password is never "
        "logged); unset: the SQLite ledger in the key store",
    )
    require_ledger_record: bool | None = Setting(
        None,
        description="accept a version only if the ledger holds the writer's record of its "
        "manifest, made while the signing key was valid",
    )
    ledger_mode: str | None = Setting(
        None,
        description="read-write (default) or read-only: a reader whose ledger role may only "
        "SELECT checks against the shared ledger and keeps its own marks in the key store",
    )
    wandb_resource: WandbResource | None = Setting(
        None, description="W&B credentials (no API key: the local store)"
    )
    entity: str | None = Setting(None, description="W&B entity (team or user)")
    project: str | None = Setting(None, description="W&B project")

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_settings(cls, data: Any) -> Any:
        return refuse_unknown_settings(cls, data)

    _engine: ArtifactIOEngine | None = PrivateAttr(default=None)

    def settings(self) -> Settings:
        return validate_settings({k: getattr(self, k) for k in SETTING_KEYS})

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Validate the settings and check the key store before the step computes anything."""
        self._engine = self._build()
        self._engine.connect_ledger()
        self._engine.preflight()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.close()

    def _build(self) -> ArtifactIOEngine:
        return ArtifactIOEngine(
            self.settings(),
            credentials=credentials_of(self.wandb_resource),
            entity=self.entity,
            project=self.project,
        )

    def engine(self) -> ArtifactIOEngine:
        if self._engine is None:
            self._engine = self._build()
        return self._engine

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        self.engine().handle_output(context, obj)

    def load_input(self, context: InputContext) -> Any:
        return self.engine().load_input(context)


# --- the legacy (upstream) form ---------------------------------------------------------


_LEGACY_SCHEMA = {
    "run_name": Field(Noneable(str), is_required=False, description="W&B run name"),
    "run_id": Field(Noneable(str), is_required=False, description="W&B run id (resumed)"),
    "wandb_run_id": Field(
        Noneable(str), is_required=False, description="synonym of run_id (as in the W&B guide)"
    ),
    "run_tags": Field(Noneable([str]), is_required=False, description="extra W&B run tags"),
    "base_dir": Field(Noneable(str), is_required=False, description="local storage folder"),
    "cache_duration_in_minutes": Field(
        Noneable(int), is_required=False, description="keep private copies this long"
    ),
    "signing_key": Field(
        DagsterAny,  # key id, "env:VAR" or {"env": "VAR"}
        is_required=False,
        description="key id in the key store, 'env:VAR' or {'env': 'VAR'} with key material",
    ),
    "key_store": Field(Noneable(str), is_required=False, description="key store folder"),
    "store": Field(Noneable(str), is_required=False, description="auto | local | wandb"),
    "local_store_dir": Field(Noneable(str), is_required=False, description="local store folder"),
    "default_serialization": Field(Noneable(str), is_required=False, description="auto"),
    "allowed_serializers": Field(Noneable([str]), is_required=False),
    "allowed_algorithms": Field(Noneable([str]), is_required=False),
    "max_payload_bytes": Field(Noneable(int), is_required=False),
    "digest_algorithm": Field(Noneable(str), is_required=False, description="blake3 | sha256"),
    "ledger": Field(
        Noneable(StringSource),
        is_required=False,
        description="postgresql:// URL of the shared ledger (unset: ledger.sqlite3 in the key "
        "store); use {'env': 'VAR'} to keep the password out of the config",
    ),
    "require_ledger_record": Field(
        Noneable(bool),
        is_required=False,
        description="accept only versions the writer recorded in the ledger",
    ),
    "ledger_mode": Field(
        Noneable(str),
        is_required=False,
        description="read-write | read-only (a SELECT-only role; marks kept in the key store)",
    ),
}


@io_manager(
    config_schema=_LEGACY_SCHEMA,
    required_resource_keys={"wandb_resource", "wandb_config"},
    description="Signed W&B artifacts IO manager (dagster-wandb-secure).",
)
def wandb_artifacts_io_manager(context: InitResourceContext) -> Iterator[ArtifactIOEngine]:
    settings = validate_settings(_legacy_synonyms(dict(context.resource_config or {})))
    wandb_config = context.resources.wandb_config
    entity, project = _entity_project(wandb_config)
    engine = ArtifactIOEngine(
        settings,
        credentials=credentials_of(context.resources.wandb_resource),
        entity=entity,
        project=project,
    )
    engine.connect_ledger()
    engine.preflight()
    try:
        yield engine
    finally:
        engine.close()


def _legacy_synonyms(raw: dict[str, Any]) -> dict[str, Any]:
    """``wandb_run_id`` (used in the W&B guide's best-practice sample) means ``run_id``."""
    alias = raw.pop("wandb_run_id", None)
    if alias is not None:
        if raw.get("run_id") not in (None, alias):
            raise WandbArtifactsIOManagerError("set only one of 'run_id' and 'wandb_run_id'")
        raw["run_id"] = alias
    return raw


def _entity_project(wandb_config: Any) -> tuple[str | None, str | None]:
    if wandb_config is None:
        return None, None
    if isinstance(wandb_config, Mapping):
        entity, project = wandb_config.get("entity"), wandb_config.get("project")
    else:
        entity = getattr(wandb_config, "entity", None)
        project = getattr(wandb_config, "project", None)
    for label, value in (("entity", entity), ("project", project)):
        if value is not None and not isinstance(value, str):
            raise WandbArtifactsIOManagerError(f"wandb_config {label} must be a string")
    return entity, project


# upstream's names at upstream's module path
ArtifactsIOManager = ArtifactIOEngine
Config = _UpstreamConfig

__all__ = [
    "ArtifactIOEngine",
    "ArtifactsIOManager",
    "Config",
    "WandbArtifactsIOManager",
    "WandbArtifactsIOManagerError",
    "wandb_artifacts_io_manager",
]
