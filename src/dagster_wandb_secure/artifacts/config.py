"""Validated configuration: the IO manager's settings and each read/write configuration.

Everything here runs before any W&B run is started or any store is opened, so a typo is reported
as a ``WandbArtifactsIOManagerError`` naming the offending key, never as a half-written artifact.

Write keys (under ``wandb_artifact_configuration`` in an output's/asset's metadata):
``name, type, description, aliases, add_dirs, add_files, add_references, serialization_module
{name, parameters}, partitions, link {target_path, aliases}``. Read keys (in an input's metadata): ``name, get, get_path,
version, alias, partitions`` (each partition entry: ``get, get_path, version, alias``).
The seed document's older spelling ``wandb_artifact_arguments`` is accepted as a synonym.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.digests import DEFAULT_DIGEST, DIGESTS
from ..core.errors import ConfigurationError, SecureArtifactError
from ..core.fsutil import safe_relpath
from ..core.ledger_api import LEDGER_MODES, check_spec, is_postgres_url
from ..stores import STORE_KINDS, default_local_dir

CONFIG_KEY = "wandb_artifact_configuration"
LEGACY_CONFIG_KEY = "wandb_artifact_arguments"

WRITE_KEYS = frozenset(
    {
        "name",
        "type",
        "description",
        "aliases",
        "add_dirs",
        "add_files",
        "add_references",
        "serialization_module",
        "partitions",
        "link",
    }
)
LINK_KEYS = frozenset({"target_path", "aliases"})
READ_KEYS = frozenset({"name", "get", "get_path", "version", "alias", "partitions"})
PARTITION_READ_KEYS = frozenset({"get", "get_path", "version", "alias"})
SERIALIZATION_KEYS = frozenset({"name", "parameters"})
ADD_FILE_KEYS = frozenset({"local_path", "name", "is_tmp", "skip_cache", "policy", "overwrite"})
ADD_DIR_KEYS = frozenset({"local_path", "name", "skip_cache", "policy", "merge"})
ADD_REFERENCE_KEYS = frozenset({"uri", "name", "checksum", "max_objects"})
STORE_CHOICES = STORE_KINDS
RUN_ID_FORBIDDEN = re.compile(r"[/\\#?%:]")
DEFAULT_CACHE_MINUTES = 60 * 24 * 30
CACHE_DIR_NAME = "dagster-wandb-secure-cache"
_ENV_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class WandbArtifactsIOManagerError(ConfigurationError):
    """The IO manager was misconfigured or asked to do something it cannot (upstream name)."""

    default_hint = "fix the wandb_artifact_configuration or IO manager configuration named above"


def _fail(reason: str, *, artifact: str | None = None, hint: str | None = None) -> None:
    raise WandbArtifactsIOManagerError(reason, artifact=artifact, hint=hint)


# --- IO manager settings ----------------------------------------------------------------


@dataclass(frozen=True)
class SigningKeyRef:
    """Which key signs: a key id in the key store, or key material held in an env variable."""

    key_id: str | None = None
    env_var: str | None = None

    @property
    def describe(self) -> str:
        if self.env_var:
            return f"env:{self.env_var}"
        return self.key_id or "<key store primary>"


def parse_signing_key(value: Any) -> SigningKeyRef:
    """``None`` (the key store's primary), ``"KID"``, ``"env:VAR"`` or ``{"env": "VAR"}``."""
    if value is None or value == "":
        return SigningKeyRef()
    if isinstance(value, Mapping):
        if set(value) != {"env"}:
            extra = sorted(set(value) - {"env"})
            _fail(f"signing_key: unknown key(s) {extra}; use {{'env': 'VAR'}}")
        var = value["env"]
    elif isinstance(value, str) and value.startswith("env:"):
        var = value[4:]
    elif isinstance(value, str):
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", value):
            _fail(f"signing_key {value!r} is not a key id (letters, digits, '-', '_', '.', ':')")
        return SigningKeyRef(key_id=value)
    else:
        _fail(
            "signing_key must be a key id, 'env:VAR' or {'env': 'VAR'}, "
            f"not {type(value).__name__}"
        )
    if not isinstance(var, str) or not _ENV_VAR_RE.fullmatch(var):
        _fail(f"signing_key: {var!r} is not an environment variable name")
    return SigningKeyRef(env_var=var)


@dataclass(frozen=True)
class Settings:
    """The IO manager's validated settings (upstream keys plus the security ones)."""

    run_name: str | None = None
    run_id: str | None = None
    run_tags: tuple[str, ...] = ()
    base_dir: str | None = None
    cache_duration_in_minutes: int = DEFAULT_CACHE_MINUTES
    signing_key: SigningKeyRef = field(default_factory=SigningKeyRef)
    key_store: str = "keys"
    store: str = "auto"
    local_store_dir: str | None = None
    default_serialization: str = "auto"
    allowed_serializers: tuple[str, ...] | None = None
    allowed_algorithms: tuple[str, ...] | None = None
    max_payload_bytes: int | None = None
    # the payload digest of new envelopes and manifests ("blake3"; "sha256" for FIPS)
    digest_algorithm: str = DEFAULT_DIGEST
    # None: ledger.sqlite3 in the key store; a postgresql:// URL: the shared ledger. Not in
    # repr: a URL may carry a password.
    ledger: str | None = field(default=None, repr=False)
    require_ledger_record: bool = False
    # "read-write" (default) or "read-only": a reader whose role may only SELECT on the shared
    # ledger checks against it and keeps its own marks in the key store (core/ledger_layered.py)
    ledger_mode: str = "read-write"

    def resolved_base_dir(self) -> Path:
        """``base_dir``, else ``$DAGSTER_HOME``, else the working directory - never Dagster's
        temporary instance folder, which is deleted when the process exits."""
        if self.base_dir:
            return Path(self.base_dir).expanduser().absolute()
        home = os.environ.get("DAGSTER_HOME")
        if home:
            return Path(home).expanduser().absolute()
        return Path.cwd()

    def resolved_local_store_dir(self) -> Path:
        """``local_store_dir``, else ``<base dir>/wandb-secure/store`` (as the CLI's default)."""
        if self.local_store_dir:
            return Path(self.local_store_dir).expanduser().absolute()
        return default_local_dir(self.resolved_base_dir())

    def resolved_key_store(self) -> Path:
        return Path(self.key_store).expanduser()


def _opt_str(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        _fail(f"{key} must be a non-empty string, not {value!r}")
    return value


def _opt_str_list(raw: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence):
        _fail(f"{key} must be a list of strings, not {value!r}")
    if not all(isinstance(v, str) and v for v in value):
        _fail(f"{key} must be a list of non-empty strings, not {value!r}")
    return tuple(value)


def unknown_keys_message(what: str, given: Sequence[str], allowed: Sequence[str]) -> str | None:
    """``None`` when every key in ``given`` is allowed, else one sentence naming each unknown
    key and the closest valid one (``key_stor`` -> ``did you mean 'key_store'?``)."""
    unknown = [str(k) for k in given if k not in allowed]
    if not unknown:
        return None
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
        parts.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return (
        f"unknown {what} setting(s) {', '.join(parts)}; valid settings: "
        + ", ".join(sorted(allowed))
    )


def validate_settings(raw: Mapping[str, Any]) -> Settings:
    """Check the IO manager configuration; unknown keys are refused by name."""
    known = sorted(Settings.__dataclass_fields__)
    message = unknown_keys_message("IO manager", [k for k in raw if k not in known], known)
    if message:
        _fail(message)
    run_id = _opt_str(raw, "run_id")
    if run_id is not None and (RUN_ID_FORBIDDEN.search(run_id) or len(run_id) > 128):
        _fail(f"run_id {run_id!r} may not contain any of / \\ # ? % : (and at most 128 characters)")
    cache = raw.get("cache_duration_in_minutes")
    if cache is None:
        cache = DEFAULT_CACHE_MINUTES
    if isinstance(cache, bool) or not isinstance(cache, int) or cache < 0:
        _fail(f"cache_duration_in_minutes must be an integer >= 0, not {cache!r}")
    store = raw.get("store") or "auto"
    if store not in STORE_CHOICES:
        _fail(f"store must be one of {list(STORE_CHOICES)}, not {store!r}")
    default_ser = raw.get("default_serialization") or "auto"
    if not isinstance(default_ser, str):
        _fail(f"default_serialization must be a string, not {default_ser!r}")
    max_payload = raw.get("max_payload_bytes")
    if max_payload is not None and (
        isinstance(max_payload, bool) or not isinstance(max_payload, int) or max_payload <= 0
    ):
        _fail(f"max_payload_bytes must be a positive integer, not {max_payload!r}")
    key_store = raw.get("key_store") or "keys"
    if not isinstance(key_store, str):
        _fail(f"key_store must be a path string, not {key_store!r}")
    tags = _opt_str_list(raw, "run_tags") or ()
    ledger = raw.get("ledger") or None
    if ledger is not None:

        if not isinstance(ledger, str):
            _fail(f"ledger must be a postgresql:// URL string, not {type(ledger).__name__}")
        try:
            check_spec(ledger)
        except ConfigurationError:
            raise
        except SecureArtifactError as exc:
            _fail(f"ledger: {exc.reason}", hint=exc.hint)
    ledger_mode = raw.get("ledger_mode") or "read-write"
    if ledger_mode not in LEDGER_MODES:
        _fail(f"ledger_mode must be one of {', '.join(LEDGER_MODES)}, not {str(ledger_mode)[:40]!r}")
    if ledger_mode == "read-only" and (ledger is None or not is_postgres_url(ledger)):
        _fail(
            "ledger_mode read-only needs ledger set to the shared postgresql:// ledger",
            hint="set ledger (e.g. from an EnvVar), or leave ledger_mode unset",
        )
    require_record = raw.get("require_ledger_record")
    if require_record is not None and not isinstance(require_record, bool):
        _fail(f"require_ledger_record must be true or false, not {require_record!r}")
    digest_algorithm = _opt_str(raw, "digest_algorithm") or DEFAULT_DIGEST
    if digest_algorithm not in DIGESTS:
        _fail(
            f"digest_algorithm must be one of {', '.join(sorted(DIGESTS))}, "
            f"not {digest_algorithm[:40]!r}"
        )
    return Settings(
        run_name=_opt_str(raw, "run_name"),
        run_id=run_id,
        run_tags=tags,
        base_dir=_opt_str(raw, "base_dir"),
        cache_duration_in_minutes=cache,
        signing_key=parse_signing_key(raw.get("signing_key")),
        key_store=key_store,
        store=store,
        local_store_dir=_opt_str(raw, "local_store_dir"),
        default_serialization=default_ser,
        allowed_serializers=_opt_str_list(raw, "allowed_serializers"),
        allowed_algorithms=_opt_str_list(raw, "allowed_algorithms"),
        max_payload_bytes=max_payload,
        digest_algorithm=digest_algorithm,
        ledger=ledger,
        require_ledger_record=bool(require_record),
        ledger_mode=ledger_mode,
    )


# --- the per-output / per-input configuration -------------------------------------------


def artifact_configuration(metadata: Mapping[str, Any] | None, *, where: str) -> dict[str, Any]:
    """Extract ``wandb_artifact_configuration`` (or its older synonym) from Dagster metadata."""
    if not metadata:
        return {}
    has_new = CONFIG_KEY in metadata
    has_old = LEGACY_CONFIG_KEY in metadata
    if has_new and has_old:
        _fail(f"{where}: set only one of {CONFIG_KEY!r} and {LEGACY_CONFIG_KEY!r}")
    value = metadata.get(CONFIG_KEY if has_new else LEGACY_CONFIG_KEY)
    if value is None:
        return {}
    value = getattr(value, "value", value)  # a dagster MetadataValue wrapping the dict
    if not isinstance(value, Mapping):
        _fail(f"{where}: {CONFIG_KEY} must be a dictionary, not {type(value).__name__}")
    return dict(value)


@dataclass(frozen=True)
class SerializationChoice:
    name: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LocalAddition:
    """One ``add_files`` / ``add_dirs`` entry: a local path and its name inside the artifact."""

    local_path: Path
    name: str | None
    is_dir: bool


@dataclass(frozen=True)
class ReferenceAddition:
    uri: str
    name: str | None
    checksum: bool = True
    max_objects: int | None = None


@dataclass(frozen=True)
class LinkChoice:
    """``link``: after publishing, link the version into a registry collection."""

    target_path: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class WriteConfig:
    name: str | None = None
    type: str | None = None
    description: str | None = None
    aliases: tuple[str, ...] = ()
    add_files: tuple[LocalAddition, ...] = ()
    add_dirs: tuple[LocalAddition, ...] = ()
    add_references: tuple[ReferenceAddition, ...] = ()
    serialization: SerializationChoice | None = None
    link: LinkChoice | None = None


def _unknown(got: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    extra = sorted(str(k) for k in got if k not in allowed)
    if extra:
        _fail(
            f"{where}: unknown key(s) {extra} in {CONFIG_KEY}; allowed keys are {sorted(allowed)}"
        )


def _check_str(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str) or not value:
        _fail(f"{where}: {CONFIG_KEY}[{key!r}] must be a non-empty string, not {value!r}")
    return value


def _entries(value: Any, key: str, where: str) -> list[Mapping[str, Any]]:
    if isinstance(value, Mapping) or isinstance(value, str) or not isinstance(value, Sequence):
        _fail(f"{where}: {CONFIG_KEY}[{key!r}] must be a list of dictionaries")
    for item in value:
        if not isinstance(item, Mapping):
            _fail(f"{where}: every entry of {CONFIG_KEY}[{key!r}] must be a dictionary")
    return list(value)


def _local_addition(item: Mapping[str, Any], key: str, where: str, is_dir: bool) -> LocalAddition:
    _unknown(item, ADD_DIR_KEYS if is_dir else ADD_FILE_KEYS, f"{where}: {key} entry")
    local = item.get("local_path")
    if not isinstance(local, str | os.PathLike) or not str(local):
        _fail(f"{where}: every {key} entry needs a 'local_path'")
    name = item.get("name")
    if name is not None:
        name = safe_relpath(_check_str(name, f"{key}.name", where), what=f"{key} name")
    return LocalAddition(local_path=Path(local), name=name, is_dir=is_dir)


def _reference(item: Mapping[str, Any], where: str) -> ReferenceAddition:
    _unknown(item, ADD_REFERENCE_KEYS, f"{where}: add_references entry")
    uri = _check_str(item.get("uri"), "add_references.uri", where)
    name = item.get("name")
    if name is not None:
        name = safe_relpath(_check_str(name, "add_references.name", where), what="reference name")
    checksum = item.get("checksum", True)
    if not isinstance(checksum, bool):
        _fail(f"{where}: add_references 'checksum' must be true or false")
    max_objects = item.get("max_objects")
    if max_objects is not None and (not isinstance(max_objects, int) or max_objects <= 0):
        _fail(f"{where}: add_references 'max_objects' must be a positive integer")
    return ReferenceAddition(uri=uri, name=name, checksum=checksum, max_objects=max_objects)


def validate_write_config(raw: Mapping[str, Any], *, where: str) -> WriteConfig:
    """Validate a write configuration (``partitions`` is accepted, as upstream, and unused)."""
    _unknown(raw, WRITE_KEYS, where)
    name = _check_str(raw["name"], "name", where) if "name" in raw else None
    type_ = _check_str(raw["type"], "type", where) if "type" in raw else None
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        _fail(f"{where}: {CONFIG_KEY}['description'] must be a string")
    aliases: tuple[str, ...] = ()
    if "aliases" in raw:
        value = raw["aliases"]
        if isinstance(value, str) or not isinstance(value, Sequence):
            _fail(f"{where}: {CONFIG_KEY}['aliases'] must be a list of strings")
        aliases = tuple(_check_str(a, "aliases", where) for a in value)
    serialization = None
    if "serialization_module" in raw:
        module = raw["serialization_module"]
        if not isinstance(module, Mapping):
            _fail(f"{where}: {CONFIG_KEY}['serialization_module'] must be a dictionary")
        _unknown(module, SERIALIZATION_KEYS, f"{where}: serialization_module")
        params = module.get("parameters") or {}
        if not isinstance(params, Mapping):
            _fail(f"{where}: serialization_module 'parameters' must be a dictionary")
        serialization = SerializationChoice(
            name=_check_str(module.get("name"), "serialization_module.name", where),
            parameters=dict(params),
        )
    files = tuple(
        _local_addition(i, "add_files", where, False)
        for i in _entries(raw.get("add_files", []), "add_files", where)
    )
    dirs = tuple(
        _local_addition(i, "add_dirs", where, True)
        for i in _entries(raw.get("add_dirs", []), "add_dirs", where)
    )
    refs = tuple(
        _reference(i, where)
        for i in _entries(raw.get("add_references", []), "add_references", where)
    )
    return WriteConfig(
        link=_link(raw.get("link"), where),
        name=name,
        type=type_,
        description=description,
        aliases=aliases,
        add_files=files,
        add_dirs=dirs,
        add_references=refs,
        serialization=serialization,
    )


def _link(value: Any, where: str) -> LinkChoice | None:
    """``"model-registry/NAME"`` or ``{"target_path": ..., "aliases": [...]}``."""
    if value is None:
        return None
    if isinstance(value, str):
        value = {"target_path": value}
    if not isinstance(value, Mapping):
        _fail(f"{where}: {CONFIG_KEY}['link'] must be a registry path or a dictionary")
    _unknown(value, LINK_KEYS, f"{where}: link")
    target = _check_str(value.get("target_path"), "link.target_path", where)
    aliases = value.get("aliases") or ()
    if isinstance(aliases, str):
        aliases = (aliases,)
    if not isinstance(aliases, Sequence):
        _fail(f"{where}: link 'aliases' must be a list of strings")
    return LinkChoice(
        target_path=target, aliases=tuple(_check_str(a, "link.aliases", where) for a in aliases)
    )


@dataclass(frozen=True)
class ReadConfig:
    """What to load: one object (``get``), one file's path (``get_path``) or the whole artifact,
    from a version (``v3`` / ``3``) or an alias (default ``latest``)."""

    name: str | None = None
    get: str | None = None
    get_path: str | None = None
    version: str | None = None
    alias: str | None = None
    partitions: Mapping[str, ReadConfig] = field(default_factory=dict)

    def for_partition(self, partition_key: str) -> ReadConfig:
        """Per-partition settings: ``partitions[key]`` replaces the ``*`` wildcard entirely."""
        specific = self.partitions.get(partition_key)
        if specific is None:
            specific = self.partitions.get("*")
        if specific is None:
            return ReadConfig(name=self.name, get=self.get, get_path=self.get_path,
                              version=self.version, alias=self.alias)
        return ReadConfig(
            name=self.name,
            get=specific.get,
            get_path=specific.get_path,
            version=specific.version,
            alias=specific.alias,
        )


def _read_fields(raw: Mapping[str, Any], where: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key in ("get", "get_path", "version", "alias"):
        out[key] = _check_str(raw[key], key, where) if raw.get(key) is not None else None
    if out["get"] and out["get_path"]:
        _fail(f"{where}: 'get' and 'get_path' cannot be used together; choose one")
    if out["version"] and out["alias"]:
        _fail(f"{where}: 'version' and 'alias' cannot be used together; choose one")
    if out["get_path"]:
        safe_relpath(out["get_path"], what="get_path")
    if out["version"] and not re.fullmatch(r"v?\d{1,9}", out["version"]):
        _fail(f"{where}: version {out['version']!r} must look like 'v3' or '3'")
    if out["alias"] and not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", out["alias"]):
        _fail(f"{where}: alias {out['alias']!r} is not a valid alias")
    return out


def validate_read_config(raw: Mapping[str, Any], *, where: str) -> ReadConfig:
    """Validate a read configuration (an input's metadata)."""
    _unknown(raw, READ_KEYS, where)
    name = _check_str(raw["name"], "name", where) if "name" in raw else None
    fields = _read_fields(raw, where)
    partitions: dict[str, ReadConfig] = {}
    raw_parts = raw.get("partitions")
    if raw_parts is not None:
        if not isinstance(raw_parts, Mapping):
            _fail(f"{where}: {CONFIG_KEY}['partitions'] must be a dictionary")
        for key, value in raw_parts.items():
            if not isinstance(value, Mapping):
                _fail(f"{where}: partitions[{key!r}] must be a dictionary")
            _unknown(value, PARTITION_READ_KEYS, f"{where}: partitions[{key!r}]")
            fields_p = _read_fields(value, f"{where}: partitions[{key!r}]")
            partitions[str(key)] = ReadConfig(**fields_p)
    return ReadConfig(name=name, partitions=partitions, **fields)


__all__ = [
    "CONFIG_KEY",
    "LEGACY_CONFIG_KEY",
    "LinkChoice",
    "LocalAddition",
    "ReadConfig",
    "ReferenceAddition",
    "SerializationChoice",
    "Settings",
    "SigningKeyRef",
    "WandbArtifactsIOManagerError",
    "WriteConfig",
    "artifact_configuration",
    "parse_signing_key",
    "unknown_keys_message",
    "validate_read_config",
    "validate_settings",
    "validate_write_config",
]
