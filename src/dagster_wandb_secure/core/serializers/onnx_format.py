"""The onnx serializer (a self-contained ModelProto, checked), and loading an unsigned ONNX file."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import MalformedEnvelopeError
from ._base import Serializer
from ._buffers import Buffer, _payload_view, _short
from .zip_checks import DEFAULT_ZIP_LIMITS, ZipLimits


def _onnx_tensors(model: Any) -> Iterator[Any]:
    def from_graph(graph: Any) -> Iterator[Any]:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            yield from from_node(node)

    def from_node(node: Any) -> Iterator[Any]:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            for sparse in attr.sparse_tensors:
                yield sparse.values
                yield sparse.indices
            if attr.HasField("g"):
                yield from from_graph(attr.g)
            for graph in attr.graphs:
                yield from from_graph(graph)

    yield from from_graph(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from from_node(node)


class OnnxSerializer(Serializer):
    name = "onnx"
    file_suffix = "onnx"
    import_name = "onnx"
    pip_package = "dagster-wandb-secure[onnx]"

    def _model(self, obj: Any) -> Any:
        onnx = self.module
        if isinstance(obj, onnx.ModelProto):
            return obj
        if isinstance(obj, bytes | bytearray | memoryview):
            return onnx.load_model_from_string(bytes(obj))
        raise TypeError(f"expected an onnx.ModelProto or its bytes, got {type(obj).__name__}")

    def _check(self, model: Any) -> None:
        uses_external_data = self.module.external_data_helper.uses_external_data
        if any(uses_external_data(tensor) for tensor in _onnx_tensors(model)):
            raise ValueError("the model references external data files; embed all tensors")
        self.module.checker.check_model(model)

    def _dump(self, obj: Any, params: dict[str, Any]) -> tuple[list[Buffer], dict[str, Any]]:
        model = self._model(obj)
        self._check(model)
        return [model.SerializeToString()], {}

    def _dump_hint(self) -> str:
        return "pass a valid, self-contained onnx.ModelProto (onnx.checker.check_model must pass)"

    def _load(
        self,
        view: memoryview,
        extra: Mapping[str, Any],
        artifact: str | None,
        key_id: str | None,
        zip_limits: ZipLimits,
    ) -> Any:
        model = self.module.load_model_from_string(bytes(view))
        self._check(model)
        return model


def load_unsigned(ser: Serializer, data: Buffer, *, artifact: str | None = None) -> Any:
    """The body of ``load_unsigned_onnx`` (see there), given the registry's onnx serializer."""
    try:
        return ser._load(_payload_view(data), {}, artifact, None, DEFAULT_ZIP_LIMITS)
    except Exception as err:
        raise MalformedEnvelopeError(
            f"unsigned ONNX file is not a valid model: {_short(err)}",
            artifact=artifact,
            hint="re-materialize the asset; new outputs are signed",
        ) from err
