"""``audit`` calls an original ``superseded`` (not failing) only when a passing version of the
store re-signs exactly it: a version a thief signed with the leaked key, which ``resign`` did not
re-sign, keeps failing as ``revoked-key`` even when a reader's ledger recorded it at the signed
position of a genuine version (a forged ``resigns`` claim)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from dagster_wandb_secure.core.history import Position
from dagster_wandb_secure.maintenance import audit as audit_module
from dagster_wandb_secure.maintenance.audit import Status

POS = Position(3, "2026-12-01T12:00:00.000000Z", "a" * 64)


def _entry(version: str, status: Status, **kw: Any) -> SimpleNamespace:
    base = dict(entity="e", project="p", name="m", version=version, aliases=[], key_id="k",
                status=status, reason=None, resigns=None, position=None,
                stored_manifest_digest=None, claimed_row_recorded=False)
    return SimpleNamespace(**{**base, **kw})


class _Ledger:
    """The auditor's ledger: it has seen the thief's manifest (a reader verified it while the
    key was valid) at the genuine original's position, as a forged ``resigns`` claims."""

    def seen_manifest(self, key: str, digest: str) -> Any:
        return SimpleNamespace(digest=digest, position=POS, version="v1")


def _run(*entries: SimpleNamespace) -> None:
    audit_module._mark_superseded(list(entries), SimpleNamespace(ledger=_Ledger()))  # type: ignore[arg-type]


def test_a_direct_resign_supersedes_its_original() -> None:
    original = _entry("v0", Status.REVOKED_KEY, stored_manifest_digest="d0")
    copy = _entry("v2", Status.VALID, resigns="d0", position=POS)
    _run(original, copy)
    assert original.status is Status.SUPERSEDED and "re-signed as v2" in original.reason


def test_a_thiefs_manifest_claiming_a_genuine_position_keeps_failing() -> None:
    thief = _entry("v1", Status.REVOKED_KEY, stored_manifest_digest="d-thief")
    copy = _entry("v2", Status.VALID, resigns="d0", position=POS)
    _run(thief, copy)
    assert thief.status is Status.REVOKED_KEY


def test_our_own_resigned_copy_is_superseded_through_the_ledger() -> None:
    ours = _entry("v1", Status.REVOKED_KEY, stored_manifest_digest="d1", claimed_row_recorded=True)
    copy = _entry("v2", Status.VALID, resigns="d0", position=POS)
    _run(ours, copy)
    assert ours.status is Status.SUPERSEDED


def test_an_original_that_still_holds_an_alias_keeps_failing() -> None:
    original = _entry("v0", Status.EXPIRED_KEY, stored_manifest_digest="d0", aliases=["latest"])
    copy = _entry("v2", Status.VALID, resigns="d0", position=POS)
    _run(original, copy)
    assert original.status is Status.EXPIRED_KEY


def test_a_tampered_or_unknown_key_original_is_never_superseded() -> None:
    for status in (Status.TAMPERED, Status.UNKNOWN_KEY, Status.MISSING_FROM_LEDGER):
        original = _entry("v0", status, stored_manifest_digest="d0")
        _run(original, _entry("v2", Status.VALID, resigns="d0", position=POS))
        assert original.status is status
