"""``core.history.judge``: the reader's one rollback decision, on signed positions only.

The time rule: a higher sequence signed more than the clock skew before the accepted version is
old content (a fresh writer restarted the sequence below it), never an advance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dagster_wandb_secure.core.history import Position, judge, signed_long_before

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def pos(sequence: int, minutes: float, digest: str = "a") -> Position:
    when = (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return Position(sequence, when, digest * 64)


def verdict(candidate: Position, mark: Position | None) -> str | None:
    v = judge(alias="latest", candidate=candidate, candidate_digest=candidate.digest,
              candidate_version="v9", mark=mark, seen=None, newest=mark)
    return None if v is None else v.status


def test_forward_in_sequence_and_time_is_accepted() -> None:
    assert verdict(pos(2, 1), pos(1, 0)) is None


@pytest.mark.parametrize("minutes_earlier", [0.5, 4.9])
def test_a_higher_sequence_signed_within_the_clock_skew_is_accepted(minutes_earlier: float) -> None:
    """Two writers' clocks differ by up to the skew: no refusal for that."""
    assert verdict(pos(2, 10 - minutes_earlier, "b"), pos(1, 10)) is None


def test_a_higher_sequence_signed_long_before_the_accepted_one_is_rolled_back() -> None:
    assert verdict(pos(2, 0, "b"), pos(1, 10)) == "rolled-back"


def test_lower_sequence_is_rolled_back_and_same_sequence_earlier_is_a_fork() -> None:
    assert verdict(pos(1, 20), pos(2, 10)) == "rolled-back"
    assert verdict(pos(2, 5, "b"), pos(2, 10)) == "forked"


def test_signed_long_before_is_strict_about_the_skew() -> None:
    assert signed_long_before(pos(1, 0), pos(1, 5.01))
    assert not signed_long_before(pos(1, 0), pos(1, 5))
    assert not signed_long_before(pos(1, 10), pos(1, 0))
