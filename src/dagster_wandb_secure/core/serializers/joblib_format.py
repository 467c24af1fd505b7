"""The joblib serializer: joblib's own file format, with lambdas and closures pickled by value."""

from __future__ import annotations

import importlib.util
import pickle
from collections.abc import Mapping
from typing import Any, ClassVar

from ._base import Serializer, _protocol, _Validator
from ._buffers import Buffer, _BufferReader, _ChunkCollector
from .zip_checks import ZipLimits

_JOBLIB_METHODS = ("zlib", "gzip", "bz2", "lzma", "xz")


def _joblib_methods() -> tuple[str, ...]:
    methods = _JOBLIB_METHODS
    if importlib.util.find_spec("lz4") is not None:
        methods = (*methods, "lz4")
    return methods


def _joblib_compress(ser: str, param: str, value: Any) -> Any:
    if value is None:
        return 0
    if type(value) is bool:
        return value
    if type(value) is int:
        if not 0 <= value <= 9:
            raise ValueError(f"must be a level from 0 to 9, got {value!r}")
        return value
    methods = _joblib_methods()
    if isinstance(value, str):
        if value not in methods:
            raise ValueError(f"unknown compression method {value!r}; known: {', '.join(methods)}")
        return value
    if isinstance(value, list | tuple) and len(value) == 2:
        method, level = value
        if not isinstance(method, str) or method not in methods:
            raise ValueError(f"unknown compression method {method!r}; known: {', '.join(methods)}")
        if type(level) is not int or not 0 <= level <= 9:
            raise ValueError(f"compression level must be an int from 0 to 9, got {level!r}")
        return [method, level]
    raise ValueError(
        "must be a level 0-9, true/false, a method name or [method, level], "
        f"got {type(value).__name__}"
    )


class _PickledByValue:
    """Carries a cloudpickle stream inside a joblib file; unpickles straight to the object."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return (pickle.loads, (self.data,))


class JoblibSerializer(Serializer):
    name = "joblib"
    pickle_family = True
    file_suffix = "joblib"
    import_name = "joblib"
    pip_package = "joblib"
    parameter_specs: ClassVar[dict[str, tuple[_Validator, Any]]] = {
        "compress": (_joblib_compress, 0),
        "protocol": (_protocol, None),
    }

    def _dump(self, obj: Any, params: dict[str, Any]) -> tuple[list[Buffer], dict[str, Any]]:
        compress = params["compress"]
        extra: dict[str, Any] = {"compress": compress, "protocol": params["protocol"]}
        try:
            return self._joblib_dump(obj, params), extra
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            # joblib's pickler saves functions by reference, so lambdas and closures (the
            # guide's own joblib example) fail. Wrap the object pickled *by value* with
            # cloudpickle; the signed parameters record it. Anything cloudpickle cannot handle
            # either still fails with the original error as the cause.
            try:
                import cloudpickle
            except ImportError:  # pragma: no cover - cloudpickle is a core dependency
                raise exc from None
            try:
                inner = cloudpickle.dumps(obj, protocol=params["protocol"] or 5)
            except Exception:  # noqa: BLE001 - report joblib's own error, the one users expect
                raise exc from None
            extra["by_value"] = "cloudpickle"
            return self._joblib_dump(_PickledByValue(inner), params), extra

    def _joblib_dump(self, obj: Any, params: dict[str, Any]) -> list[Buffer]:
        compress = params["compress"]
        collector = _ChunkCollector()
        self.module.dump(
            obj,
            collector,
            compress=tuple(compress) if isinstance(compress, list) else compress,
            protocol=params["protocol"],
        )
        return collector.finish()

    def _load(
        self,
        view: memoryview,
        extra: Mapping[str, Any],
        artifact: str | None,
        key_id: str | None,
        zip_limits: ZipLimits,
    ) -> Any:
        return self.module.load(_BufferReader(view))

    def _dump_hint(self) -> str:
        return (
            "make the object picklable (joblib pickles lambdas and closures by value with "
            "cloudpickle, but not generators, open files or sockets)"
        )
