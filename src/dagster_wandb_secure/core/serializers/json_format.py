"""The json serializer: plain JSON data as UTF-8 with sorted keys and no whitespace."""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Mapping
from typing import Any

from ..canonical import reject_duplicate_keys
from ._base import Serializer
from ._buffers import Buffer
from .zip_checks import ZipLimits

_MAX_JSON_DEPTH = 128


def _check_json_value(value: Any, depth: int = 0) -> None:
    if depth > _MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {_MAX_JSON_DEPTH} levels")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not valid JSON")
        return
    if isinstance(value, list):
        for item in value:
            _check_json_value(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"object keys must be strings, got {type(key).__name__}")
            _check_json_value(item, depth + 1)
        return
    raise ValueError(
        f"{type(value).__name__} is not JSON data (use dict, list, str, int, float, bool, None)"
    )


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class JsonSerializer(Serializer):
    name = "json"
    file_suffix = "json"
    import_name = "json"

    def module_version(self) -> str:
        return f"python-{platform.python_version()}"

    def _dump(self, obj: Any, params: dict[str, Any]) -> tuple[list[Buffer], dict[str, Any]]:
        _check_json_value(obj)
        text = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return [text.encode("utf-8")], {}

    def _dump_hint(self) -> str:
        return "the json module stores only plain JSON data; use 'pickle' for other objects"

    def _load(
        self,
        view: memoryview,
        extra: Mapping[str, Any],
        artifact: str | None,
        key_id: str | None,
        zip_limits: ZipLimits,
    ) -> Any:
        text = str(view, "utf-8", "strict")
        return json.loads(text, object_pairs_hook=reject_duplicate_keys, parse_constant=_no_constants)
