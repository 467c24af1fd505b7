"""Count calls to a function for the duration of a test: ``calls = count_calls(monkeypatch,
os.path, "realpath")`` replaces the attribute with a wrapper that records each call's arguments
and then calls the real function; ``len(calls)`` is the count. ``only`` keeps the calls it
accepts (for example one file name among every ``os.stat``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

Call = tuple[tuple[Any, ...], dict[str, Any]]


def count_calls(
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    name: str,
    only: Callable[..., bool] | None = None,
) -> list[Call]:
    calls: list[Call] = []
    real = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        if only is None or only(*args, **kwargs):
            calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls
