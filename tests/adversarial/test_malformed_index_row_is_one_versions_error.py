"""Guarantee: a malformed row of the store index is a typed error for that version only.

Readers used to trust the index's columns: a files list that is empty or not pairs, deeply nested
metadata, an unparseable date or an alias number stored as text gave ``AttributeError`` /
``TypeError`` / ``RecursionError`` / ``ValueError``, and ``audit`` of the whole store exited 4
("internal error"), hiding every other version's status. Now every row is validated when read:
the version gets a ``VersionRowError`` (a ``StoreError``), the audit reports it as ``error`` with
the reason and audits all the others (exit 1). A hypothesis fuzzer mutates one column of one row.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dagster_wandb_secure.core.errors import SecureArtifactError
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.maintenance.audit import audit_store
from dagster_wandb_secure.stores.base import ArtifactVersion, VersionRowError, scan_versions
from dagster_wandb_secure.stores.local import LocalArtifactStore
from kit.cli import ENTITY, PROJECT, Env, run_json

DEEP = "[" * 100_000 + "]" * 100_000
SHA = "ab" * 32

# (table, column, hostile value) applied to the row of team/proj/a:v1
MUTATIONS: list[tuple[str, str, Any]] = [
    ("versions", "files", "{}"),
    ("versions", "files", "[]"),
    ("versions", "files", '{"output.pickle": 3}'),
    ("versions", "files", '{"output.pickle": [1]}'),
    ("versions", "files", json.dumps({"../../etc/passwd": [1, SHA]})),
    ("versions", "files", json.dumps({"f": [True, SHA]})),
    ("versions", "files", json.dumps({"f": [1, "zz"]})),
    ("versions", "files", "not json"),
    ("versions", "files", 7),
    ("versions", "files", b"\x00binary"),
    ("versions", "metadata", '{"a": ' + DEEP + "}"),
    ("versions", "metadata", DEEP),
    ("versions", "metadata", "[1, 2]"),
    ("versions", "metadata", '{"a": 1, "a": 2}'),
    ("versions", "metadata", '{"x": NaN}'),
    ("versions", "metadata", "null"),
    ("versions", "created_at", "not a date"),
    ("versions", "created_at", "2026-01-01T00:00:00"),  # no time zone
    ("versions", "created_at", 12),
    ("versions", "description", b"\xff"),  # a BLOB (TEXT affinity keeps blobs)
    ("versions", "created_by_run", "run\nid"),
    ("versions", "created_by_run", b"run"),
]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    keys = tmp_path / "keys"
    ks = KeyStore.open(keys)
    ks.generate("ed25519")
    store_dir = tmp_path / "store"
    e = Env(tmp_path, keys, store_dir, ks, LocalArtifactStore(store_dir))
    e.publish("a")
    e.publish("a")
    e.publish("b")
    return e


def _update(env: Env, table: str, column: str, value: Any, where: str = "number = 1") -> None:
    conn = sqlite3.connect(env.store_dir / "index.sqlite3")
    with conn:
        art = conn.execute("SELECT id FROM artifacts WHERE name = 'a'").fetchone()[0]
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE artifact_id = ? AND {where}",
                     (value, art))
    conn.close()


def _check_outcomes(env: Env) -> None:
    """a:v1 refused with a VersionRowError naming it; a:v0 and b:v0 read as before."""
    store = LocalArtifactStore(env.store_dir)
    with pytest.raises(VersionRowError) as info:
        store.resolve(ENTITY, PROJECT, "a", version=1)
    assert "team/proj/a:v1" in str(info.value) and "malformed" in str(info.value)
    assert store.resolve(ENTITY, PROJECT, "a", version=0).version == 0
    assert store.resolve(ENTITY, PROJECT, "b").version == 0
    with pytest.raises(VersionRowError):
        list(store.list_versions())
    items = list(scan_versions(store))
    assert [type(i).__name__ for i in items] == ["ArtifactVersion", "VersionRowError",
                                                 "ArtifactVersion"]


@pytest.mark.parametrize(("table", "column", "value"), MUTATIONS,
                         ids=[f"{c}-{i}" for i, (_, c, _) in enumerate(MUTATIONS)])
def test_a_malformed_version_row_is_a_typed_error_for_that_version_only(
    env: Env, table: str, column: str, value: Any
) -> None:
    _update(env, table, column, value)
    _check_outcomes(env)


@pytest.mark.parametrize("number", ["latest", "1", 1.5, "1e400", -3, b"\x01"])
def test_an_alias_number_that_is_not_an_integer_is_refused(env: Env, number: Any) -> None:
    conn = sqlite3.connect(env.store_dir / "index.sqlite3")
    with conn:
        conn.execute("UPDATE aliases SET number = ? WHERE alias = 'latest' AND artifact_id = "
                     "(SELECT id FROM artifacts WHERE name = 'a')", (number,))
    conn.close()
    store = LocalArtifactStore(env.store_dir)
    if number == "1":  # SQLite's INTEGER affinity stores the text '1' as the integer 1
        assert store.resolve(ENTITY, PROJECT, "a").version == 1
        return
    for action in (lambda: store.resolve(ENTITY, PROJECT, "a"),
                   lambda: store.aliases(ENTITY, PROJECT, "a")):
        with pytest.raises(VersionRowError, match="version number of alias 'latest'"):
            action()
    assert store.resolve(ENTITY, PROJECT, "b").version == 0


def test_audit_reports_the_bad_row_as_error_and_audits_every_other_version(
    env: Env, tmp_path: Path
) -> None:
    _update(env, "versions", "files", "[]")
    report = audit_store(LocalArtifactStore(env.store_dir), env.ks)
    by_name = {e.qualified_name: e for e in report.entries}
    assert by_name["team/proj/a:v1"].status.value == "error"
    assert by_name["team/proj/a:v1"].error_type == "VersionRowError"
    assert "files column" in (by_name["team/proj/a:v1"].reason or "")
    assert by_name["team/proj/a:v0"].status.value == "valid"
    assert by_name["team/proj/b:v0"].status.value == "valid"
    code, doc = run_json(CliRunner(), "audit", "-k", str(env.keys),
                         "--store-dir", str(env.store_dir), "--fail-on", "any")
    assert code == 1  # a failing status, not 4 ("internal error")
    statuses = {f"{e['name']}:{e['version']}": e["status"] for e in doc["versions"]}
    assert statuses == {"a:v0": "valid", "a:v1": "error", "b:v0": "valid"}


# --- fuzzing: one column of one row, replaced by a hostile value --------------------------------

COLUMNS = [
    ("artifacts", "entity"), ("artifacts", "project"), ("artifacts", "name"),
    ("artifacts", "type"), ("artifacts", "created_at"),
    ("versions", "number"), ("versions", "description"), ("versions", "metadata"),
    ("versions", "created_at"), ("versions", "created_by_run"), ("versions", "files"),
    ("aliases", "alias"), ("aliases", "number"),
]
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True), st.text(max_size=40), st.binary(max_size=40),
    st.sampled_from(["..", "../x", "/", "v1", "latest,v2", "", "{}", "[]", "[[[[", "null",
                     json.dumps({"f": [1, SHA]}), "2026-13-01T00:00:00+00:00", DEEP]),
)


@pytest.fixture(scope="module")
def base_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-index")
    keys = root / "keys"
    ks = KeyStore.open(keys)
    ks.generate("ed25519")
    e = Env(root, keys, root / "store", ks, LocalArtifactStore(root / "store"))
    e.publish("a")
    e.publish("a")
    e.publish("b")
    return root / "store" / "index.sqlite3"


def _copy_index(src: Path, dest_dir: Path) -> None:
    dest_dir.mkdir()
    with sqlite3.connect(src) as a, sqlite3.connect(dest_dir / "index.sqlite3") as b:
        a.backup(b)
    a.close()
    b.close()


def _well_formed(av: ArtifactVersion) -> None:
    assert isinstance(av.version, int) and isinstance(av.type, str)
    assert isinstance(av.metadata, dict) and av.files
    assert all(isinstance(a, str) for a in av.aliases)
    assert av.created_at.tzinfo is not None


@settings(max_examples=100, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(column=st.sampled_from(COLUMNS), row=st.integers(0, 2), value=_scalars)
@example(column=("artifacts", "name"), row=0, value=b"")  # found by this fuzzer: a BLOB name
def test_fuzz_one_column_of_one_row(base_index: Path, tmp_path_factory: pytest.TempPathFactory,
                                    column: tuple[str, str], row: int, value: Any) -> None:
    work = tmp_path_factory.mktemp("case")
    _copy_index(base_index, work / "store")
    table, col = column
    conn = sqlite3.connect(work / "store" / "index.sqlite3")
    try:
        with conn:
            rowids = [r[0] for r in conn.execute(f"SELECT rowid FROM {table} ORDER BY rowid")
                      ] if table != "versions" else None
            if table == "versions":  # WITHOUT ROWID: address it by its key
                keys = conn.execute("SELECT artifact_id, number FROM versions "
                                    "ORDER BY artifact_id, number").fetchall()
                art, num = keys[row % len(keys)]
                conn.execute(f"UPDATE versions SET {col} = ? WHERE artifact_id = ? AND "
                             "number = ?", (value, art, num))
            else:
                assert rowids
                conn.execute(f"UPDATE {table} SET {col} = ? WHERE rowid = ?",
                             (value, rowids[row % len(rowids)]))
    except sqlite3.IntegrityError:
        return  # NOT NULL / CHECK / UNIQUE refused the value: nothing to read
    finally:
        conn.close()
    store = LocalArtifactStore(work / "store")
    try:
        for item in scan_versions(store):
            if isinstance(item, VersionRowError):
                assert item.reason and "malformed" in item.reason
            else:
                _well_formed(item)
        for name in ("a", "b"):
            for what in ({"version": 0}, {"version": 1}, {}):
                try:
                    _well_formed(store.resolve(ENTITY, PROJECT, name, **what))
                except SecureArtifactError:
                    pass
            try:
                aliases = store.aliases(ENTITY, PROJECT, name)
                assert all(isinstance(n, int) for n in aliases.values())
            except SecureArtifactError:
                pass
    finally:
        del store
