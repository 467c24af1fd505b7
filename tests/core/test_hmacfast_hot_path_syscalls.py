"""System calls of one seal + unseal (issue 16, small objects, session 6 ``p-hmacfast``): no
``os.getpid()`` in the key store's or the ledger's fork checks (a fork generation,
``core/forkgen.py``, bumped by an ``os.register_at_fork`` hook), while a forked child still
gets its own locks and its own ledger connection; and the key file's checks (one ``lstat`` per
seal and per unseal, mode and owner) still run on every operation after the fast paths."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from dagster_wandb_secure.core import forkgen
from dagster_wandb_secure.core.envelope import seal, unseal
from dagster_wandb_secure.core.errors import KeyPermissionError, KeyStoreError
from dagster_wandb_secure.core.keys import KeyStore
from kit.counting import count_calls

CTX = {"artifact": "small", "type": "dataset"}
OBJ = {"name": "daily-metrics", "rows": 1234}


def _op(ks: KeyStore, record: bool = True) -> None:
    assert unseal(seal(OBJ, key_store=ks, context=CTX, record=record), key_store=ks,
                  expected_context=CTX) == OBJ


def test_no_getpid_in_the_key_store_or_ledger_per_operation(
    key_store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _op(key_store)  # warm: keys loaded, the ledger's connection open
    me = threading.current_thread()  # not the ledger's flusher thread (its own check)
    calls = count_calls(
        monkeypatch, os, "getpid", only=lambda *_, **__: threading.current_thread() is me
    )
    for _ in range(5):
        _op(key_store)
    # before: 3 per operation (KeyStore._current twice, Ledger.record_signature once)
    assert calls == []


def test_a_forked_child_gets_a_new_generation_its_own_locks_and_ledger_connection(
    key_store: KeyStore,
) -> None:
    _op(key_store)
    ledger = key_store.ledger
    parent_conn, parent_mutex = ledger._conn, key_store._mutex
    assert parent_conn is not None
    before = forkgen.GENERATION[0]
    rows_before = ledger.count()
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 1
        try:
            ok = forkgen.GENERATION[0] == before + 1
            _op(key_store)  # seal with a ledger row, unseal
            ok = ok and key_store._mutex is not parent_mutex
            ok = ok and ledger._conn is not None and ledger._conn is not parent_conn
            ledger.durable()
            code = 0 if ok else 3
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert forkgen.GENERATION[0] == before  # the parent's generation is unchanged
    assert ledger._conn is parent_conn  # ... and so is its connection
    _op(key_store)
    ledger.flush()
    assert ledger.count() == rows_before + 2  # the child's row and the parent's new one


def _private_file(ks: KeyStore) -> Path:
    record = ks.primary()
    return Path(ks._files.private_file(record))


def test_one_lstat_of_the_key_file_per_seal_and_per_unseal(
    key_store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _op(key_store, record=False)
    key_file = str(_private_file(key_store))
    lstats = count_calls(monkeypatch, os, "lstat", only=lambda p, *_, **__: str(p) == key_file)
    data = seal(OBJ, key_store=key_store, context=CTX, record=False)
    assert len(lstats) == 1
    lstats.clear()
    unseal(data, key_store=key_store, expected_context=CTX)
    # Ed25519 verifies with the public key file (its own lstat); HMAC with the secret's file
    assert len(lstats) == (1 if key_store.primary().alg == "hmac-sha256" else 0)


def test_a_key_file_made_readable_by_others_is_refused_at_the_next_seal_and_unseal(
    key_store: KeyStore,
) -> None:
    data = seal(OBJ, key_store=key_store, context=CTX, record=False)
    _op(key_store, record=False)  # everything cached
    key_file = _private_file(key_store)
    os.chmod(key_file, 0o644)
    with pytest.raises(KeyPermissionError):
        seal(OBJ, key_store=key_store, context=CTX, record=False)
    if key_store.primary().alg == "hmac-sha256":  # the secret is the verify key
        with pytest.raises(KeyPermissionError):
            unseal(data, key_store=key_store, expected_context=CTX)
    os.chmod(key_file, stat.S_IRUSR | stat.S_IWUSR)
    assert unseal(data, key_store=key_store, expected_context=CTX) == OBJ


def test_a_replaced_hmac_secret_is_read_again_and_refused(tmp_path: Path) -> None:
    ks = KeyStore.open(tmp_path / "keys")
    ks.generate("hmac-sha256")
    data = seal(OBJ, key_store=ks, context=CTX, record=False)
    _op(ks, record=False)  # the secret loaded and its keyed state prepared
    key_file = _private_file(ks)
    other = KeyStore.open(tmp_path / "other")
    other.generate("hmac-sha256")
    replacement = tmp_path / "replacement"
    replacement.write_bytes(_private_file(other).read_bytes())
    os.chmod(replacement, 0o600)
    os.replace(replacement, key_file)  # a new identity: read again, fingerprint checked
    with pytest.raises(KeyStoreError, match="fingerprint mismatch"):
        unseal(data, key_store=ks, expected_context=CTX)
    with pytest.raises(KeyStoreError, match="fingerprint mismatch"):
        seal(OBJ, key_store=ks, context=CTX, record=False)
