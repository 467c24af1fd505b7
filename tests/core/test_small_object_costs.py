"""Per-object costs of seal + unseal as algorithmic properties (issue 16, "Small objects"): how
many looks at keystore.json, canonical-JSON passes and SQL statements one object costs, that the
HMAC key is prepared once per key, and that the caches behind these never outlive a change made
by another process (revocation takes effect at the next operation)."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dagster_wandb_secure.core import algorithms, ledger_groups
from dagster_wandb_secure.core.envelope import seal, seal_with_header, unseal
from dagster_wandb_secure.core.errors import KeyStoreError, NoSigningKeyError, RevokedKeyError
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.ledger import Ledger
from kit.counting import Call, count_calls

CTX = {"artifact": "small", "type": "dataset"}
OBJ = {"name": "daily-metrics", "rows": 1234, "columns": [f"col_{i}" for i in range(24)]}


@pytest.fixture
def stats_of_keystore_json(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    return count_calls(
        monkeypatch, os, "stat", only=lambda path, *_, **__: str(path).endswith("keystore.json")
    )


def test_one_look_at_keystore_json_per_seal_and_per_unseal(
    key_store: KeyStore, stats_of_keystore_json: list[Call]
) -> None:
    data = seal(OBJ, key_store=key_store, context=CTX, record=False)  # warm: keys loaded
    unseal(data, key_store=key_store, expected_context=CTX)
    stats_of_keystore_json.clear()
    data = seal(OBJ, key_store=key_store, context=CTX, record=False)
    assert len(stats_of_keystore_json) == 1
    stats_of_keystore_json.clear()
    assert unseal(data, key_store=key_store, expected_context=CTX) == OBJ
    assert len(stats_of_keystore_json) == 1


@pytest.fixture
def json_passes(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    counts = {"dumps": 0, "loads": 0}
    real_dumps, real_loads = json.dumps, json.loads

    def dumps(*args: Any, **kwargs: Any) -> str:
        counts["dumps"] += 1
        return real_dumps(*args, **kwargs)

    def loads(*args: Any, **kwargs: Any) -> Any:
        counts["loads"] += 1
        return real_loads(*args, **kwargs)

    monkeypatch.setattr(json, "dumps", dumps)
    monkeypatch.setattr(json, "loads", loads)
    return counts


def test_no_json_pass_per_seal_or_unseal_once_the_header_shape_is_known(
    key_store: KeyStore, json_passes: dict[str, int]
) -> None:
    data = seal(OBJ, key_store=key_store, context=CTX, record=False)
    assert json_passes["dumps"] >= 1  # keystore.json parsed, the shape's template built
    assert unseal(data, key_store=key_store, expected_context=CTX) == OBJ  # the full strict path
    json_passes.update(dumps=0, loads=0)
    data = seal(OBJ, key_store=key_store, context=CTX, record=False)
    assert json_passes == {"dumps": 0, "loads": 0}  # rendered from the precompiled template
    assert unseal(data, key_store=key_store, expected_context=CTX) == OBJ
    assert json_passes == {"dumps": 0, "loads": 0}  # matched against the verified shape


def test_a_float_in_signed_parameters_is_still_refused_at_seal(key_store: KeyStore) -> None:
    from dagster_wandb_secure.core import canonical, envelope

    with pytest.raises(canonical.CanonicalJSONError, match="floating-point|float"):
        envelope._assemble(  # what a serializer returning a float parameter would reach
            [b"x"], "pickle", "1", {"protocol": 5.0}, dict(CTX), key_store.signer(),
            envelope.default_policy(), envelope.get_digest("sha256"),
        )


def test_hmac_key_is_prepared_once_per_key_not_per_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ks = KeyStore.open(tmp_path / "keys")
    ks.generate("hmac-sha256")
    made = count_calls(monkeypatch, algorithms, "_keyed_hmac")

    def refuse(*_: Any, **__: Any) -> bytes:
        raise AssertionError("the one-shot hmac.digest path is not used per message")

    monkeypatch.setattr(algorithms.hmac, "digest", refuse)
    for _ in range(20):
        unseal(seal(OBJ, key_store=ks, context=CTX, record=False), key_store=ks,
               expected_context=CTX)
    assert len(made) == 2  # one keyed state for signing, one for verifying


def test_a_seal_runs_no_sql_on_the_callers_thread_until_its_group_commits(
    key_store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_groups, "GROUP_WINDOW_S", 60.0)  # no commit by age in this test
    monkeypatch.setattr(ledger_groups, "FLUSHER_DELAY_S", 60.0)
    ledger = key_store.ledger
    statements: list[str] = []
    ledger.flush()
    ledger._connection().set_trace_callback(statements.append)
    rows = [
        seal_with_header(OBJ, key_store=key_store, context=CTX)[1].ledger_row for _ in range(10)
    ]
    # the group's first row takes the write lock and the next id; the other nine run no SQL
    assert statements == ["BEGIN IMMEDIATE", "SELECT MAX(id) FROM signatures"]
    assert rows == list(range(rows[0], rows[0] + 10))
    other = sqlite3.connect(ledger.path)
    assert other.execute("SELECT COUNT(*) FROM signatures").fetchone()[0] == 0  # not committed
    ledger.durable()
    inserts = [s for s in statements if s.startswith("INSERT")]
    # the group's ten rows: one multi-row INSERT (the statement runs once, not once per row)
    assert statements[-1] == "COMMIT" and len(inserts) == 1 and inserts[0].count("), (") == 9
    assert other.execute("SELECT COUNT(*) FROM signatures").fetchone()[0] == 10
    other.close()
    assert [r.id for r in ledger.rows(artifact="small")] == rows  # the ids handed out
    ledger.attach_version(rows[3], artifact_version="v3")  # the returned ids are real rows
    assert ledger.rows(artifact="small")[3].artifact_version == "v3"


def test_own_reads_see_the_open_groups_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_groups, "GROUP_WINDOW_S", 60.0)
    monkeypatch.setattr(ledger_groups, "FLUSHER_DELAY_S", 60.0)
    from kit.ledger_rows import digest, entry

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    first = ledger.record_signature(**entry(1))
    assert ledger._group_rows == 1
    assert [r.id for r in ledger.find_digest(digest(1))] == [first]
    assert ledger.count() == 1
    ledger.close()


def test_a_grouped_row_that_cannot_be_inserted_breaks_the_ledger_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_groups, "GROUP_WINDOW_S", 60.0)
    monkeypatch.setattr(ledger_groups, "FLUSHER_DELAY_S", 60.0)
    from kit.ledger_rows import entry

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.count()  # creates the schema
    conn = sqlite3.connect(ledger.path)
    conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON signatures WHEN NEW.serializer = 'boom' "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    conn.commit()
    conn.close()
    ledger.record_signature(**entry(1))
    ledger.record_signature(**entry(2, serializer="boom"))  # queued: the id is handed out
    with pytest.raises(KeyStoreError, match="refused"):
        ledger.durable()  # the barrier never passes: nothing may be published
    with pytest.raises(KeyStoreError, match="lost uncommitted"):
        ledger.record_signature(**entry(3))
    with pytest.raises(KeyStoreError, match="lost uncommitted"):
        ledger.close()  # says so once more, and resets the object
    assert Ledger(tmp_path / "ledger.sqlite3").count() == 0  # the whole group rolled back


def _revoke(path: str, kid: str) -> None:
    KeyStore.open(path).revoke(kid, "revoked by another process")


def test_a_revocation_by_another_process_takes_effect_at_the_next_operation(
    key_store: KeyStore,
) -> None:
    kid = key_store.primary().kid
    data = seal(OBJ, key_store=key_store, context=CTX, record=False)
    assert unseal(data, key_store=key_store, expected_context=CTX) == OBJ  # everything cached
    proc = multiprocessing.get_context("spawn").Process(
        target=_revoke, args=(str(key_store.path), kid)
    )
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    with pytest.raises(RevokedKeyError):
        unseal(data, key_store=key_store, expected_context=CTX)
    with pytest.raises(NoSigningKeyError):
        seal(OBJ, key_store=key_store, context=CTX, record=False)


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1.0}, {"a": "\ud800"}, {1: "x"}, {"a": 10**20}, {"a": -(10**20)}, {"a": [1.5]},
        {"a": {"b": float("nan")}}, {"a": 1, "b": None, "c": True, "d": "x", "e": 10**20 - 1},
        {"a": [1, "x"], "b": {"c": None}}, {}, {"\ud800": 1},
    ],
)
def test_the_flat_shape_check_decides_as_the_full_walk(value: Any) -> None:
    from dagster_wandb_secure.core import canonical

    def verdict(check: Any) -> str | None:
        try:
            check(value)
        except canonical.CanonicalJSONError as exc:
            return type(exc).__name__
        return None

    assert verdict(canonical.check_shape) == verdict(lambda v: canonical._check_shape(v, 0))


@pytest.mark.parametrize(
    "bad",
    [
        {"digest": "A" * 64}, {"length": -1}, {"length": 1 << 63}, {"length": True},
        {"signed_at": "\ud800"}, {"signed_at": ""}, {"run_id": "\ud800"}, {"run_id": 7},
        {"origin": "forged"}, {"context": {"artifact": "model", "type": "\ud800"}},
    ],
)
def test_the_signer_part_memo_still_checks_every_value(tmp_path: Path, bad: dict[str, Any]) -> None:
    from kit.ledger_rows import entry

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    try:
        ledger.record_signature(**entry(1, context={"artifact": "model", "type": "dataset"}))
        with pytest.raises(KeyStoreError):  # the same signer parts, memoized: still refused
            ledger.record_signature(
                **entry(2, **{"context": {"artifact": "model", "type": "dataset"}, **bad})
            )
        ledger.durable()
        assert [r.length for r in ledger.rows()] == [1]
    finally:
        ledger.close()
