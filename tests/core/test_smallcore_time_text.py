"""``format_time`` (signed_at, and the ledger's recorded_at) formats whole seconds once per second:
the text must stay exactly what ``strftime("%Y-%m-%dT%H:%M:%S.%fZ")`` of the UTC time gives, for
any time zone, any second, and any order of calls (the per-second memo is never stale)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from dagster_wandb_secure.core import ledger_rows
from dagster_wandb_secure.core.envelope_format import format_time, parse_time


def _reference(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30)),
            st.integers(min_value=-23 * 60, max_value=23 * 60),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_format_time_is_the_strftime_text_in_any_order(items: list[tuple[datetime, int]]) -> None:
    for naive, offset in items:
        aware = naive.replace(tzinfo=timezone(timedelta(minutes=offset)))
        assert format_time(aware) == _reference(aware)
        same_second = aware.replace(microsecond=(aware.microsecond + 1) % 1_000_000)
        assert format_time(same_second) == _reference(same_second)
        assert parse_time(format_time(aware)) == aware.astimezone(UTC)


def test_format_time_memo_follows_the_second() -> None:
    base = datetime(2026, 1, 2, 3, 4, 5, 999_999, tzinfo=UTC)
    assert format_time(base) == "2026-01-02T03:04:05.999999Z"
    later = base + timedelta(microseconds=1)
    assert format_time(later) == "2026-01-02T03:04:06.000000Z"
    assert format_time(base) == "2026-01-02T03:04:05.999999Z"
    early = datetime(999, 1, 1, tzinfo=UTC)  # strftime's own text, unchanged
    assert format_time(early) == _reference(early)


def test_recorded_at_keeps_its_shape() -> None:
    text = ledger_rows._now_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text)
    assert abs(parse_time(text) - datetime.now(UTC)) < timedelta(seconds=5)
