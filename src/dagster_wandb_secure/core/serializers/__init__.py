"""The serializer registry: pickle, dill, cloudpickle, joblib, skops, onnx and json.

The envelope (``core/envelope.py``) is the only caller that deserializes, and it calls ``load``
only on bytes whose signature, digest and length it has already verified. This package never
imports Dagster or W&B; optional libraries are imported when their serializer is first requested.

Contract (used by the envelope)::

    ser = get_serializer(name)              # SerializationError / SerializerUnavailableError
    params = ser.validate_parameters(user_params)        # normalized, JSON-able
    chunks, signed_extra = ser.dump(obj, params)         # payload == b"".join(chunks)
    obj = ser.load(payload_view, signed_extra)           # only on verified bytes

Every chunk returned by ``dump`` is ``bytes``, a ``bytearray`` or a one-dimensional, contiguous
``memoryview`` of format ``"B"``, so ``len(chunk)`` is its size in bytes. Chunks may *reference*
the object's own memory (zero copy): they must be consumed (hashed and written) before the
object is modified.

Layouts, one module per format: ``pickle_family`` (pickle, dill, cloudpickle; the ``inband`` and
``oob-v1`` framings are specified there), ``joblib_format`` (joblib's own file format written to a
file object), ``skops_format`` (a skops zip, checked by ``zip_checks`` first), ``onnx_format`` (an
ONNX ``ModelProto`` in protobuf encoding), ``json_format`` (UTF-8 JSON with sorted keys and no
whitespace). ``_base`` holds the Serializer class, ``_buffers`` the zero-copy byte plumbing.
"""

from __future__ import annotations

import sys
from typing import Any

from ..errors import SerializationError, SerializerUnavailableError
from ._base import Serializer
from ._buffers import Buffer, _short
from .joblib_format import JoblibSerializer
from .json_format import JsonSerializer
from .onnx_format import OnnxSerializer
from .onnx_format import load_unsigned as _load_unsigned_onnx
from .pickle_family import (
    FRAMING_INBAND,
    FRAMING_OOB,
    OOB_MAX_BUFFERS,
    CloudpickleSerializer,
    DillSerializer,
    PickleSerializer,
    parse_oob_framing,
)
from .skops_format import SkopsSerializer
from .skops_format import load_unsigned as _load_unsigned_skops
from .zip_checks import DEFAULT_ZIP_LIMITS, ZipLimits, check_zip

SERIALIZERS: tuple[str, ...] = (
    "pickle",
    "dill",
    "cloudpickle",
    "joblib",
    "skops",
    "onnx",
    "json",
)
# The pickle family, in registry order: the only definition of this list in the project (policy
# refuses it unsigned; upstream dagster-wandb wrote ``output.<name>`` for each, see adopt/verify).
PICKLE_FAMILY_NAMES: tuple[str, ...] = ("pickle", "dill", "cloudpickle", "joblib")
PICKLE_FAMILY: frozenset[str] = frozenset(PICKLE_FAMILY_NAMES)

_CLASSES: dict[str, type[Serializer]] = {
    cls.name: cls
    for cls in (
        PickleSerializer,
        DillSerializer,
        CloudpickleSerializer,
        JoblibSerializer,
        SkopsSerializer,
        OnnxSerializer,
        JsonSerializer,
    )
}
assert tuple(_CLASSES) == SERIALIZERS
assert PICKLE_FAMILY_NAMES == tuple(n for n, c in _CLASSES.items() if c.pickle_family)
_INSTANCES: dict[str, Serializer] = {}


def get_serializer(name: str) -> Serializer:
    """The serializer called ``name``. Unknown name -> SerializationError; its library not
    installed -> SerializerUnavailableError naming what to pip install."""
    if not isinstance(name, str) or name not in _CLASSES:
        raise SerializationError(
            f"unknown serialization module {name!r}; known: {', '.join(SERIALIZERS)}",
            hint=f"use one of: {', '.join(SERIALIZERS)}",
        )
    ser = _INSTANCES.get(name)
    if ser is None:
        cls = _CLASSES[name]
        try:
            ser = cls()
        except ImportError as err:
            raise SerializerUnavailableError(
                f"serialization module {name!r} needs {cls.import_name!r}, which is not "
                f"installed ({_short(err)})",
                hint=f"pip install '{cls.pip_package}'",
            ) from err
        except Exception as err:
            raise SerializerUnavailableError(
                f"serialization module {name!r} needs {cls.import_name!r}, which is installed "
                f"but fails to import ({_short(err)})",
                hint=f"reinstall it: pip install --force-reinstall '{cls.pip_package}'",
            ) from err
        _INSTANCES[name] = ser
    return ser


def auto_serializer_name(obj: Any) -> str:
    """The safest serializer for ``obj``: skops for scikit-learn estimators, onnx for ONNX
    models, else pickle. Never imports sklearn or onnx (only checks already loaded modules)."""
    sk_base = sys.modules.get("sklearn.base")
    if sk_base is not None and isinstance(obj, sk_base.BaseEstimator):
        return "skops"
    onnx = sys.modules.get("onnx")
    model_proto = getattr(onnx, "ModelProto", None) if onnx is not None else None
    if model_proto is not None and isinstance(obj, model_proto):
        return "onnx"
    return "pickle"


def load_unsigned_skops(
    data: Buffer,
    *,
    limits: ZipLimits | None = None,
    artifact: str | None = None,
) -> Any:
    """Load an UNSIGNED skops file with skops' default trusted types only.

    The caller must have checked that policy allows unsigned safe formats. A type outside the
    defaults raises SerializerNotAllowedError naming it; a malformed or oversized zip raises
    MalformedEnvelopeError / ResourceLimitError before skops reads it."""
    ser = get_serializer("skops")
    return _load_unsigned_skops(ser, data, limits=limits, artifact=artifact)


def load_unsigned_onnx(data: Buffer, *, artifact: str | None = None) -> Any:
    """Load an UNSIGNED ONNX model (protobuf parse + ``onnx.checker``, no external data).

    The caller must have checked that policy allows unsigned safe formats."""
    ser = get_serializer("onnx")
    return _load_unsigned_onnx(ser, data, artifact=artifact)


__all__ = [
    "DEFAULT_ZIP_LIMITS",
    "FRAMING_INBAND",
    "FRAMING_OOB",
    "OOB_MAX_BUFFERS",
    "PICKLE_FAMILY",
    "PICKLE_FAMILY_NAMES",
    "SERIALIZERS",
    "Buffer",
    "CloudpickleSerializer",
    "DillSerializer",
    "JoblibSerializer",
    "JsonSerializer",
    "OnnxSerializer",
    "PickleSerializer",
    "Serializer",
    "SkopsSerializer",
    "ZipLimits",
    "auto_serializer_name",
    "check_zip",
    "get_serializer",
    "load_unsigned_onnx",
    "load_unsigned_skops",
    "parse_oob_framing",
]
