"""``safe_relpath`` refuses a NUL, C0 control character or DEL anywhere in a name (one regex
scan; it was a loop over the characters): the same names as the per-character rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dagster_wandb_secure.core.errors import UnsafePathError
from dagster_wandb_secure.core.fsutil import safe_relpath


def _has_control(name: str) -> bool:  # the rule as it was written before
    return any(ord(c) < 0x20 or c == "\x7f" for c in name)


@pytest.mark.parametrize("c", [chr(i) for i in range(0x20)] + ["\x7f"])
def test_every_control_character_is_refused_anywhere(c: str) -> None:
    for name in (f"{c}a", f"a{c}", f"a/b{c}c", f"dir/{c}"):
        with pytest.raises(UnsafePathError, match="NUL or control character"):
            safe_relpath(name)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FF), min_size=1, max_size=12))
def test_the_regex_refuses_exactly_what_the_character_loop_refused(name: str) -> None:
    try:
        safe_relpath(name)
    except UnsafePathError as exc:
        refused_for_control = "control character" in str(exc)
    else:
        refused_for_control = False
    assert refused_for_control == _has_control(name)
