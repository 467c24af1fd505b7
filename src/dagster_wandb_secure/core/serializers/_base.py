"""The Serializer base class: the dump/load contract, parameter validation and error wrapping."""

from __future__ import annotations

import importlib
import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, ClassVar

from ..errors import MalformedEnvelopeError, SecureArtifactError, SerializationError
from ._buffers import Buffer, _payload_view, _short
from .zip_checks import DEFAULT_ZIP_LIMITS, ZipLimits

_REFUSED_PARAMETERS: dict[str, str] = {
    "file": "the library chooses where the payload is written",
    "filename": "the library chooses where the payload is written",
    "fileobj": "the library chooses where the payload is written",
    "fix_imports": "Python 2 compatibility options are not supported",
    "encoding": "Python 2 compatibility options are not supported",
    "errors": "Python 2 compatibility options are not supported",
    "buffer_callback": "out-of-band buffers are managed by the library (framing oob-v1)",
    "buffers": "out-of-band buffers are managed by the library (framing oob-v1)",
    "fmode": "pickling open file handles is not supported",
    "ignore": "loader options cannot be set by the writer",
    "mmap_mode": "memory-mapped loading is not supported for signed payloads",
    "trusted": "skops trusted types are recorded automatically at dump time and signed",
    "persistent_id": "custom persistence hooks are not supported",
    "reducer_override": "custom reducers are not supported",
}

_Validator = Callable[[str, str, Any], Any]


def _param_error(ser: str, param: str, reason: str, artifact: str | None) -> SerializationError:
    return SerializationError(
        f"serializer {ser!r}: parameter {param!r} {reason}",
        artifact=artifact,
        hint="fix `serialization_module.parameters` in the output's wandb_artifact_configuration",
    )


def _protocol(ser: str, param: str, value: Any) -> int:
    if value is None:
        return pickle.HIGHEST_PROTOCOL
    if type(value) is not int or not 2 <= value <= pickle.HIGHEST_PROTOCOL:
        raise ValueError(f"must be an int from 2 to {pickle.HIGHEST_PROTOCOL}, got {value!r}")
    return value


def _boolean(ser: str, param: str, value: Any) -> bool:
    if type(value) is not bool:
        raise ValueError(f"must be true or false, got {value!r}")
    return value


class Serializer(ABC):
    """One serialization format. Instances are stateless; get them with ``get_serializer``."""

    name: ClassVar[str]
    pickle_family: ClassVar[bool] = False
    file_suffix: ClassVar[str]
    import_name: ClassVar[str | None] = None  # module imported on first use
    pip_package: ClassVar[str] = ""
    parameter_specs: ClassVar[dict[str, tuple[_Validator, Any]]] = {}  # name -> (check, default)

    def __init__(self) -> None:
        self._module: ModuleType | None = None
        if self.import_name is not None:
            self._module = importlib.import_module(self.import_name)

    @property
    def module(self) -> ModuleType:
        assert self._module is not None
        return self._module

    def module_version(self) -> str:
        return str(getattr(self.module, "__version__", "unknown"))

    # -- parameters --

    def validate_parameters(
        self, parameters: Mapping[str, Any] | None, *, artifact: str | None = None
    ) -> dict[str, Any]:
        """Check user parameters; returns every parameter with its effective value."""
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, Mapping):
            raise SerializationError(
                f"serializer {self.name!r}: parameters must be a mapping, "
                f"got {type(parameters).__name__}",
                artifact=artifact,
                hint="pass `parameters` as a dict, e.g. {'protocol': 5}",
            )
        out: dict[str, Any] = {}
        for key, value in parameters.items():
            if not isinstance(key, str):
                raise _param_error(self.name, repr(key), "is not a string", artifact)
            if key not in self.parameter_specs:
                if key in _REFUSED_PARAMETERS:
                    reason = f"is not accepted: {_REFUSED_PARAMETERS[key]}"
                else:
                    allowed = ", ".join(sorted(self.parameter_specs)) or "none"
                    reason = f"is unknown (allowed: {allowed})"
                raise _param_error(self.name, key, reason, artifact)
            check, _default = self.parameter_specs[key]
            try:
                out[key] = check(self.name, key, value)
            except ValueError as err:
                raise _param_error(self.name, key, str(err), artifact) from None
        for key, (check, default) in self.parameter_specs.items():
            if key not in out:
                out[key] = check(self.name, key, default)
        return out

    # -- dump / load --

    def dump(
        self, obj: Any, params: Mapping[str, Any] | None = None, *, artifact: str | None = None
    ) -> tuple[list[Buffer], dict[str, Any]]:
        """Serialize ``obj``; returns (payload chunks, signed_extra)."""
        return self.dump_validated(
            obj, self.validate_parameters(params, artifact=artifact), artifact=artifact
        )

    def dump_validated(
        self, obj: Any, checked: dict[str, Any], *, artifact: str | None = None
    ) -> tuple[list[Buffer], dict[str, Any]]:
        """``dump`` with parameters ``validate_parameters`` just returned (not checked again)."""
        try:
            chunks, extra = self._dump(obj, checked)
        except SecureArtifactError:
            raise
        except Exception as err:
            raise SerializationError(
                f"{self.name} could not serialize an object of type "
                f"{type(obj).__module__}.{type(obj).__qualname__}: {_short(err)}",
                artifact=artifact,
                hint=self._dump_hint(),
            ) from err
        extra["module_version"] = self.module_version()
        return chunks, extra

    def load(
        self,
        payload: Buffer,
        signed_extra: Mapping[str, Any],
        *,
        artifact: str | None = None,
        key_id: str | None = None,
        zip_limits: ZipLimits | None = None,
    ) -> Any:
        """Deserialize a payload whose signature was already verified (never call it on
        anything else). Framing errors raise MalformedEnvelopeError; a library failure on the
        verified bytes raises SerializationError (a writer-side bug or a version skew)."""
        view = _payload_view(payload)
        if not isinstance(signed_extra, Mapping):
            raise self._malformed("serializer_params is not an object", artifact, key_id)
        try:
            limits = zip_limits or DEFAULT_ZIP_LIMITS
            return self._load(view, signed_extra, artifact, key_id, limits)
        except SecureArtifactError:
            raise
        except Exception as err:
            raise self._load_failed(err, signed_extra, artifact, key_id) from err

    @abstractmethod
    def _dump(self, obj: Any, params: dict[str, Any]) -> tuple[list[Buffer], dict[str, Any]]: ...

    @abstractmethod
    def _load(
        self,
        view: memoryview,
        extra: Mapping[str, Any],
        artifact: str | None,
        key_id: str | None,
        zip_limits: ZipLimits,
    ) -> Any: ...

    def _dump_hint(self) -> str:
        return "choose another serialization module or fix its parameters"

    def _malformed(
        self, reason: str, artifact: str | None, key_id: str | None
    ) -> MalformedEnvelopeError:
        return MalformedEnvelopeError(
            f"{self.name} payload: {reason}", artifact=artifact, key_id=key_id
        )

    def _load_failed(
        self,
        err: BaseException,
        extra: Mapping[str, Any],
        artifact: str | None,
        key_id: str | None,
    ) -> SerializationError:
        recorded = extra.get("module_version")
        installed = self.module_version()
        skew = ""
        if isinstance(recorded, str) and recorded != installed:
            skew = f" (written with {self.name} {recorded}, installed {installed})"
        return SerializationError(
            f"could not deserialize the verified {self.name} payload: {_short(err)}. The bytes "
            f"were signed by a trusted key, so this is a writer-side bug or a version skew{skew}",
            artifact=artifact,
            key_id=key_id,
            hint=(
                "read it with the library versions it was written with, or re-materialize the "
                "asset with the reader's versions"
            ),
        )
