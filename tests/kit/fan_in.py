"""``fan_in_assets(count)``: ``count`` small assets ``part_<i>`` (each ``{"i": i}``) and one
asset ``gather`` reading them all, the per-asset cost tests' shape."""

from __future__ import annotations

from typing import Any


def fan_in_assets(count: int) -> list[Any]:
    from dagster import AssetIn, asset

    def producer(i: int) -> Any:
        @asset(name=f"part_{i}")
        def part() -> dict[str, int]:
            return {"i": i}

        return part

    names = [f"part_{i}" for i in range(count)]

    @asset(name="gather", ins={n: AssetIn() for n in names})
    def gather(**inputs: Any) -> int:
        return len(inputs)

    return [producer(i) for i in range(count)] + [gather]
