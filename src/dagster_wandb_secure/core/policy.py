"""What a reader accepts: allowed serializers and algorithms, and size limits.

A valid signature is not a licence: even a signed payload is deserialized only if its serializer is
on ``allowed_serializers``. Unsigned pickle-family data is never loaded through this policy (there
is deliberately no knob for it; legacy pickles go through ``dagster-wandb-secure adopt``).

``Policy.from_config`` is how the Dagster IO manager passes policy knobs through; it names any
unknown key or wrongly typed value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from .algorithms import ALGORITHMS
from .digests import DIGESTS
from .errors import (
    AlgorithmMismatchError,
    ConfigurationError,
    MalformedEnvelopeError,
    ResourceLimitError,
    SerializerNotAllowedError,
    UnsignedPayloadError,
)
from .serializers import PICKLE_FAMILY, SERIALIZERS, ZipLimits

KNOWN_ALGORITHMS: tuple[str, ...] = ALGORITHMS  # the algorithm table's allow-list
SAFE_FORMATS: frozenset[str] = frozenset({"skops", "onnx"})
GiB = 1 << 30

KNOWN_DIGESTS: tuple[str, ...] = tuple(DIGESTS)  # the digest registry's names
_SET_FIELDS = {
    "allowed_serializers": SERIALIZERS,
    "allowed_algorithms": KNOWN_ALGORITHMS,
    "allowed_digests": KNOWN_DIGESTS,
}
_INT_FIELDS = (
    "max_header_bytes",
    "max_payload_bytes",
    "max_manifest_entries",
    "max_manifest_bytes",
    "max_files",
    "max_zip_uncompressed_bytes",
    "max_zip_entries",
)
_BOOL_FIELDS = ("allow_unsigned_safe_formats", "require_signature")


@dataclass(frozen=True)
class Policy:
    """Reader-side rules. Every field has a safe default; ``Policy()`` == ``Policy.default()``.

    - ``allowed_serializers``: serializers whose (signed) payloads may be deserialized.
    - ``allowed_algorithms``: signature algorithms accepted in an envelope header (exact names).
    - ``allowed_digests``: payload digest algorithms (the header's signed ``digest_alg`` and the
      manifest entries' digests) accepted; ``["sha256"]`` for FIPS-only readers.
    - ``max_header_bytes`` / ``max_payload_bytes``: envelope size caps, checked before allocating.
    - ``max_manifest_entries`` / ``max_files``: caps for multi-file artifacts and their manifests.
    - ``max_manifest_bytes``: cap of a manifest file; a reader checks the preamble and reads only
      what the header announces, never more than this.
    - ``max_zip_uncompressed_bytes`` / ``max_zip_entries``: zip-bomb caps for skops payloads.
    - ``allow_unsigned_safe_formats``: unsigned skops (default trusted types only) and unsigned
      ONNX files may load. Never applies to the pickle family.
    - ``require_signature``: when False, unsigned files that are not serialized objects (plain
      files, W&B objects) may be returned; it never allows unsigned pickle-family data.
    """

    allowed_serializers: frozenset[str] = frozenset(SERIALIZERS)
    allowed_algorithms: frozenset[str] = frozenset(KNOWN_ALGORITHMS)
    allowed_digests: frozenset[str] = frozenset(KNOWN_DIGESTS)
    max_header_bytes: int = 65536
    max_payload_bytes: int = 64 * GiB
    max_manifest_entries: int = 100_000
    max_manifest_bytes: int = 64 << 20
    max_files: int = 100_000
    max_zip_uncompressed_bytes: int = 16 * GiB
    max_zip_entries: int = 100_000
    allow_unsigned_safe_formats: bool = True
    require_signature: bool = True

    def __post_init__(self) -> None:
        for name, known in _SET_FIELDS.items():
            object.__setattr__(self, name, _name_set(name, getattr(self, name), known))
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise ConfigurationError(
                    f"policy key {name!r} must be a positive integer, got {value!r}"
                )
        for name in _BOOL_FIELDS:
            value = getattr(self, name)
            if type(value) is not bool:
                raise ConfigurationError(
                    f"policy key {name!r} must be true or false, got {value!r}"
                )

    # -- construction --

    @classmethod
    def default(cls) -> Policy:
        return cls()

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> Policy:
        """Build a policy from configuration (for example the IO manager's ``policy`` field).

        Keys are the field names; set-valued keys take a list of names. Unknown keys and wrong
        types raise ConfigurationError naming the key."""
        if config is None:
            return cls()
        if not isinstance(config, Mapping):
            raise ConfigurationError(
                f"the policy configuration must be a mapping, got {type(config).__name__}"
            )
        known = [f.name for f in fields(cls)]
        kwargs: dict[str, Any] = {}
        for key, value in config.items():
            if key not in known:
                raise ConfigurationError(
                    f"unknown policy key {key!r}; known keys: {', '.join(known)}"
                )
            if key in _SET_FIELDS and (
                isinstance(value, str | bytes) or not isinstance(value, list | tuple)
            ):
                raise ConfigurationError(
                    f"policy key {key!r} must be a list of names, got {type(value).__name__}"
                )
            kwargs[key] = value
        return cls(**kwargs)

    def to_config(self) -> dict[str, Any]:
        """The inverse of ``from_config`` (sorted lists), e.g. for run metadata."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = sorted(value) if isinstance(value, frozenset) else value
        return out

    @property
    def zip_limits(self) -> ZipLimits:
        return ZipLimits(
            max_entries=self.max_zip_entries,
            max_uncompressed_bytes=self.max_zip_uncompressed_bytes,
        )

    # -- checks --

    def check_serializer(
        self, name: str, *, artifact: str | None = None, key_id: str | None = None
    ) -> None:
        """SerializerNotAllowedError unless ``name`` is a known, allowed serializer."""
        if not isinstance(name, str) or name not in SERIALIZERS:
            raise SerializerNotAllowedError(
                f"unknown serializer {name!r}",
                artifact=artifact,
                key_id=key_id,
                hint=f"known serializers: {', '.join(SERIALIZERS)}",
            )
        if name not in self.allowed_serializers:
            raise SerializerNotAllowedError(
                f"serializer {name!r} is not allowed by policy "
                f"(allowed: {', '.join(sorted(self.allowed_serializers))})",
                artifact=artifact,
                key_id=key_id,
            )

    def check_algorithm(
        self, alg: str, *, artifact: str | None = None, key_id: str | None = None
    ) -> None:
        """AlgorithmMismatchError unless ``alg`` is exactly an allowed algorithm name."""
        if not isinstance(alg, str) or alg not in self.allowed_algorithms:
            raise AlgorithmMismatchError(
                f"signature algorithm {_shown(alg)} is not allowed "
                f"(allowed: {', '.join(sorted(self.allowed_algorithms))})",
                artifact=artifact,
                key_id=key_id,
            )

    def check_digest(
        self, alg: str, *, artifact: str | None = None, key_id: str | None = None
    ) -> None:
        """AlgorithmMismatchError unless ``alg`` is exactly an allowed digest algorithm name."""
        if not isinstance(alg, str) or alg not in self.allowed_digests:
            raise AlgorithmMismatchError(
                f"digest algorithm {_shown(alg)} is not allowed "
                f"(allowed: {', '.join(sorted(self.allowed_digests))})",
                artifact=artifact,
                key_id=key_id,
            )

    def check_payload_size(
        self, n: int, *, artifact: str | None = None, key_id: str | None = None
    ) -> None:
        self._check_count(n, self.max_payload_bytes, "payload of", "bytes", artifact, key_id)

    def check_header_size(
        self, n: int, *, artifact: str | None = None, key_id: str | None = None
    ) -> None:
        self._check_count(n, self.max_header_bytes, "header of", "bytes", artifact, key_id)

    def check_manifest_entries(
        self, n: int, *, artifact: str | None = None, key_id: str | None = None
    ) -> None:
        self._check_count(
            n, self.max_manifest_entries, "manifest with", "entries", artifact, key_id
        )

    def check_file_count(
        self, n: int, *, artifact: str | None = None, key_id: str | None = None
    ) -> None:
        self._check_count(n, self.max_files, "artifact with", "files", artifact, key_id)

    def check_unsigned(self, serializer: str | None, *, artifact: str | None = None) -> None:
        """May a payload WITHOUT a signed envelope be used? ``serializer`` is the format it would
        be read with (``None`` for a plain file that is not deserialized). Pickle-family data is
        always refused; skops/onnx need ``allow_unsigned_safe_formats`` (or
        ``require_signature=False``); anything else needs ``require_signature=False``."""
        if serializer is not None and (
            not isinstance(serializer, str) or serializer not in SERIALIZERS
        ):
            raise UnsignedPayloadError(
                f"unsigned payload of unknown format {serializer!r}", artifact=artifact
            )
        if serializer in PICKLE_FAMILY:
            raise UnsignedPayloadError(
                f"unsigned {serializer} payload: pickle-family data is never loaded unsigned",
                artifact=artifact,
            )
        if serializer is not None:
            self.check_serializer(serializer, artifact=artifact)
        if not self.require_signature:
            return
        if serializer in SAFE_FORMATS and self.allow_unsigned_safe_formats:
            return
        what = f"unsigned {serializer} payload" if serializer else "unsigned file"
        raise UnsignedPayloadError(
            f"{what} refused: the policy requires a signature",
            artifact=artifact,
            hint=(
                "re-materialize the asset so it is signed, or migrate it with "
                "`dagster-wandb-secure adopt`"
            ),
        )

    @staticmethod
    def _check_count(
        n: int, limit: int, what: str, unit: str, artifact: str | None, key_id: str | None
    ) -> None:
        if type(n) is not int or n < 0:
            raise MalformedEnvelopeError(
                f"invalid {unit} count {n!r}", artifact=artifact, key_id=key_id
            )
        if n > limit:
            raise ResourceLimitError(
                f"{what} {n} {unit} exceeds the policy limit of {limit}",
                artifact=artifact,
                key_id=key_id,
            )


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _name_set(name: str, value: Any, known: Iterable[str]) -> frozenset[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigurationError(
            f"policy key {name!r} must be a collection of names, got {type(value).__name__}"
        )
    items = list(value)
    bad = [v for v in items if not isinstance(v, str) or v not in known]
    if bad:
        raise ConfigurationError(
            f"policy key {name!r} names unknown values {bad!r}; known: {', '.join(known)}"
        )
    if not items:
        raise ConfigurationError(f"policy key {name!r} is empty: nothing could ever be read")
    return frozenset(items)


__all__ = ["GiB", "KNOWN_ALGORITHMS", "SAFE_FORMATS", "Policy"]
