"""The skops serializer (a zip of scikit-learn state), and loading an unsigned skops file safely."""

from __future__ import annotations

import importlib
import zipfile
from collections.abc import Mapping
from typing import Any, ClassVar

from ..errors import MalformedEnvelopeError, SerializationError, SerializerNotAllowedError
from ._base import Serializer, _Validator
from ._buffers import Buffer, _payload_view, _short
from .zip_checks import ZipLimits, check_zip

_MAX_TRUSTED_TYPES = 10_000


_ZIP_METHODS = {
    "stored": zipfile.ZIP_STORED,
    "deflated": zipfile.ZIP_DEFLATED,
    "bzip2": zipfile.ZIP_BZIP2,
    "lzma": zipfile.ZIP_LZMA,
}


def _zip_compression(ser: str, param: str, value: Any) -> int:
    if value is None:
        return zipfile.ZIP_STORED
    if isinstance(value, str) and value in _ZIP_METHODS:
        return _ZIP_METHODS[value]
    if type(value) is int and value in _ZIP_METHODS.values():
        return value
    raise ValueError(f"must be one of {', '.join(_ZIP_METHODS)} (or its zipfile constant)")


def _zip_level(ser: str, param: str, value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= 9:
        raise ValueError(f"must be an int from 0 to 9, got {value!r}")
    return value


def _trusted_types(value: Any) -> list[str]:
    if (
        not isinstance(value, list)
        or len(value) > _MAX_TRUSTED_TYPES
        or not all(isinstance(t, str) and t and len(t) <= 512 for t in value)
    ):
        raise ValueError("trusted_types must be a list of type names")
    return list(value)


class SkopsSerializer(Serializer):
    name = "skops"
    file_suffix = "skops"
    import_name = "skops.io"
    pip_package = "skops"
    parameter_specs: ClassVar[dict[str, tuple[_Validator, Any]]] = {
        "compression": (_zip_compression, None),
        "compresslevel": (_zip_level, None),
    }

    def module_version(self) -> str:
        return str(importlib.import_module("skops").__version__)

    def _dump(self, obj: Any, params: dict[str, Any]) -> tuple[list[Buffer], dict[str, Any]]:
        data = self.module.dumps(
            obj, compression=params["compression"], compresslevel=params["compresslevel"]
        )
        trusted = sorted(self.module.get_untrusted_types(data=data))
        return [data], {"trusted_types": trusted}

    def _dump_hint(self) -> str:
        return "skops supports scikit-learn style objects; use 'joblib' or 'pickle' for others"

    def _load(
        self,
        view: memoryview,
        extra: Mapping[str, Any],
        artifact: str | None,
        key_id: str | None,
        zip_limits: ZipLimits,
    ) -> Any:
        try:
            trusted = _trusted_types(extra.get("trusted_types"))
        except ValueError as err:
            raise self._malformed(str(err), artifact, key_id) from None
        check_zip(view, limits=zip_limits, artifact=artifact, key_id=key_id)
        return self.module.loads(bytes(view), trusted=trusted)


def load_unsigned(
    ser: Serializer,
    data: Buffer,
    *,
    limits: ZipLimits | None = None,
    artifact: str | None = None,
) -> Any:
    """The body of ``load_unsigned_skops`` (see there), given the registry's skops serializer."""
    view = _payload_view(data)
    check_zip(view, limits=limits, artifact=artifact)
    raw = bytes(view)
    exceptions = importlib.import_module("skops.io.exceptions")
    try:
        untrusted = sorted(ser.module.get_untrusted_types(data=raw))
    except Exception as err:
        raise MalformedEnvelopeError(
            f"unsigned skops file cannot be audited: {_short(err)}", artifact=artifact
        ) from err
    if untrusted:
        raise _untrusted_skops(untrusted, artifact)
    try:
        return ser.module.loads(raw, trusted=None)
    except exceptions.UntrustedTypesFoundException as err:
        raise _untrusted_skops([str(err)[:200]], artifact) from None
    except Exception as err:
        raise SerializationError(
            f"unsigned skops file could not be loaded: {_short(err)}",
            artifact=artifact,
            hint="re-materialize the asset; new outputs are signed",
        ) from err


def _untrusted_skops(types: list[str], artifact: str | None) -> SerializerNotAllowedError:
    shown = ", ".join(types[:10]) + (" ..." if len(types) > 10 else "")
    return SerializerNotAllowedError(
        f"unsigned skops file needs types outside skops' default trusted list: {shown}",
        artifact=artifact,
        hint=(
            "an unsigned file cannot vouch for those types; re-publish it signed "
            "(`dagster-wandb-secure adopt`) or re-materialize the asset"
        ),
    )
