"""The key store's lifecycle: open, generate, promote, rotate, retire, revoke, destroy, import;
``signer()`` and ``verify()``.

Its parts live next to it: the algorithm table in ``algorithms.py``, key records and the
``keystore.json`` format in ``keyrecords.py``, key files and their caches in ``keyfiles.py``,
public key bundles and environment keys in ``keybundles.py``. This module re-exports the names
importers use (``KeyStore``, ``KeyRecord``, ``KeyStatus``, ``ALGORITHMS``, ``check_kid``, ...).

A key store is a folder: ``keystore.json`` (every record, replaced atomically), ``keystore.lock``,
``private/<kid><suffix>`` (0600), ``public/<kid>.pub.pem`` (0644) and ``ledger.sqlite3``; layout
and formats in ``keys/README.md`` and SECURITY.md.

Security rules this module enforces:

- The verifier decides the algorithm: each key is bound to exactly one algorithm of the
  allow-list ``ALGORITHMS``; a header naming anything else (``none``, ``NONE``, the other
  algorithm, ...) is an ``AlgorithmMismatchError``.
- Key ids are lookup hints, never paths: each one is checked against ``KID_RE`` before any use;
  an invalid or unknown id fails closed with ``UnknownKeyError``, and error messages show a
  bounded, escaped form of it.
- Every change of the store (generate, promote, rotate, retire, revoke, destroy, import) happens
  under one hold of the lock and ends with one atomic replace of ``keystore.json``; key material
  is written before the record that references it. A crash leaves the store fully old or fully
  new; an orphan key file left by a crash is ignored (``cleanup_orphans`` removes it).
- Private material readable by group or others, or owned by another user, is refused
  (``KeyPermissionError``); so is a key store inside or around an artifact store
  (``keystore_place.py``). An HMAC secret from outside the store must be in the key format
  (``algorithms.parse_hmac_key``); a passphrase only ever encrypts a PEM file.
- A key past its not-after verifies nothing, whatever an envelope's ``signed_at`` says.

The hot path costs one ``stat`` of ``keystore.json`` per ``signer()`` and per ``verify()`` (never
more: the state read once is passed down) and one ``lstat`` of the key file (its permission and
owner check): records are re-parsed only when keystore.json's inode, size, mtime or ctime
changed, and loaded key objects (and an HMAC's keyed state) are cached per (key id, file
identity). Why no stale cache can be used: SECURITY.md "Key store", "Caches on the hot path".
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization  # noqa: F401 - patched by tests

from .algorithms import (
    ALGORITHMS,
    DEFAULT_ALGORITHM,
    ED25519,
    HMAC_FINGERPRINT_TAG,
    HMAC_SHA256,
    MIN_HMAC_SECRET_BYTES,
    SIGNATURE_SIZES,
    SigningKey,
    algorithm,
    format_hmac_key,
)
from .algorithms import decode_b64_secret as _decode_b64_secret  # noqa: F401 - patched by tests
from .errors import (
    AlgorithmMismatchError,
    KeyStoreError,
    NoSigningKeyError,
    TamperedPayloadError,
    UnknownKeyError,
)
from .forkgen import GENERATION
from .fsutil import (
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    InterProcessLock,
    atomic_write,
    check_owner,
)
from .keybundles import (
    EnvKey,
    bundle_kid,
    check_reimport,
    env_key,
    imported_record,
    parse_bundle,
    render_bundle,
)
from .keyfiles import (
    PUBLIC_FILE_MODE,
    KeyFiles,
    passphrase,
)
from .keyrecords import (
    DEAD_STATUSES,
    KID_RE,
    KeyRecord,
    KeyStatus,
    check_env_name,
    check_grace,
    check_kid,
    check_promotable,
    check_verifiable,
    derived_kid,
    end_date,
    expiry,
    kid_fingerprint,
    match_fingerprint,
    safe_kid,
    signing_refusal,
)
from .keyrecords import dump_store as _dump_store
from .keyrecords import now as _now
from .keyrecords import parse_store as _parse_store
from .keyrecords import read_store_file as _read_store_file
from .keys_memo import OWN_SIGNATURES
from .keystore_place import check_key_store_place
from .keystore_state import StoreState as _State
from .keystore_state import close_pin, load_state
from .ledger import Ledger

if TYPE_CHECKING:
    from .ledger import Ledger
    from .ledger_api import LedgerBackend

__all__ = [
    "ALGORITHMS",
    "ED25519",
    "HMAC_FINGERPRINT_TAG",
    "HMAC_SHA256",
    "KID_RE",
    "MIN_HMAC_SECRET_BYTES",
    "SIGNATURE_LENGTH",
    "KeyRecord",
    "KeyStatus",
    "KeyStore",
    "SigningKey",
    "atomic_write",
    "check_kid",
    "safe_kid",
]

SIGNATURE_LENGTH = SIGNATURE_SIZES

KEYSTORE_FILE = "keystore.json"
LOCK_FILE = "keystore.lock"
LEDGER_FILE = "ledger.sqlite3"
KEYSTORE_FILE_MODE = 0o644
MAX_REASON_CHARS = 1000


# --- the store -----------------------------------------------------------------------------------


class KeyStore:
    """A folder of keys. Thread-safe; safe to use from several processes at once."""

    path: Path

    def __init__(self, path: Path, *, clock: Callable[[], datetime] | None = None) -> None:
        """Use ``KeyStore.open``; this constructor does no I/O and no checks."""
        self.path = path
        self.clock: Callable[[], datetime] = clock or _now
        self._file = path / KEYSTORE_FILE
        self._file_str = str(self._file)  # stat()ed per operation: no Path.__fspath__ call
        self._files = KeyFiles(path)
        self._lock = InterProcessLock(path / LOCK_FILE)
        self._mutex = threading.RLock()
        self._state: _State | None = None
        self._signers: dict[str, tuple[tuple[int, ...], SigningKey]] = {}
        self._env: dict[str, EnvKey] = {}
        self._env_primary: str | None = None
        # kid -> (state, env generation, record): the record ``_verifier`` resolved from that very
        # parse of keystore.json and those env keys (a new parse is a new state object)
        self._verifiers: dict[str, tuple[_State, int, KeyRecord]] = {}
        self._env_gen = 0
        self._fork_gen = GENERATION[0]  # forkgen.py: a fork is a new generation, no getpid()
        self._ledger: Ledger | None = None

    def __repr__(self) -> str:
        return f"KeyStore({str(self.path)!r})"

    # -- opening ----------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        create: bool = True,
        clock: Callable[[], datetime] | None = None,
    ) -> KeyStore:
        """Open the key store at ``path``; create it (folders 0700, empty ``keystore.json``)
        when missing and ``create`` is true, else raise ``KeyStoreError``."""
        path = Path(path).expanduser()
        if not path.exists():
            check_key_store_place(path.absolute(), exists=False)
            if not create:
                raise KeyStoreError(
                    f"no key store at {path}",
                    hint=f"create one with `dagster-wandb-secure keys generate --key-store {path} --alg {DEFAULT_ALGORITHM}`",
                )
            path.mkdir(parents=True, mode=PRIVATE_DIR_MODE, exist_ok=True)
            os.chmod(path, PRIVATE_DIR_MODE)
        path = path.resolve()
        if not path.is_dir():
            raise KeyStoreError(f"{path} is not a folder", hint="point the key store at a folder")
        store = cls(path, clock=clock)
        check_key_store_place(path)
        if not store._file.exists():
            if not create:
                raise KeyStoreError(
                    f"{path} holds no {KEYSTORE_FILE}",
                    hint=f"create one with `dagster-wandb-secure keys generate --key-store {path} --alg {DEFAULT_ALGORITHM}`",
                )
            with store._lock:
                if not store._file.exists():
                    # A new store: make its folder private even if it already existed (e.g. a
                    # checked-out keys/ folder) - it is about to hold key material.
                    os.chmod(path, PRIVATE_DIR_MODE)
                    store._files.ensure_dirs()
                    atomic_write(store._file, _dump_store([]), mode=KEYSTORE_FILE_MODE)
        state = store._current()
        if any(r.has_private for r in state.records.values()):
            store._files.check_private_dirs()
        return store

    # -- reading records --------------------------------------------------------------------------

    def _after_fork_check(self) -> None:
        """In a forked child, drop the parent's locks: another parent thread may have held
        the mutex, and an inherited lock file descriptor would share the parent's lock."""
        if self._fork_gen != GENERATION[0]:
            self._fork_gen = GENERATION[0]
            self._mutex = threading.RLock()
            self._lock = InterProcessLock(self.path / LOCK_FILE)
            self._files.after_fork()

    def _current(self) -> _State:
        """The records, re-read only when keystore.json changed (one ``stat`` on a hit)."""
        if self._fork_gen != GENERATION[0]:  # _after_fork_check, inlined (the hot path)
            self._after_fork_check()
        try:
            st = os.stat(self._file_str)
        except FileNotFoundError:
            raise KeyStoreError(
                f"{self._file} is missing",
                hint="restore it from a backup, or open the folder as a new key store",
            ) from None
        state = self._state
        # keystore_state.fresh, inlined (the hot path): why an unchanged identity is the same file
        if state is not None and state.sig == (
            st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
        ):
            return state
        return self._reload()

    def _reload(self) -> _State:
        with self._mutex:
            old, self._state = self._state, load_state(self._file)
            if old is not None:
                close_pin(old)
            return self._state

    def close(self) -> None:
        """Release the descriptor this object keeps on keystore.json and the ledger's
        connection. The object stays usable (a later call re-reads)."""
        with self._mutex:
            state, self._state = self._state, None
            if state is not None:
                close_pin(state)
            if self._ledger is not None:
                self._ledger.close()

    def __del__(self) -> None:
        state = getattr(self, "_state", None)
        if state is not None:
            with contextlib.suppress(Exception):
                close_pin(state)

    def records(self) -> list[KeyRecord]:
        """Every key record (store order), then the in-memory env keys of this process."""
        state = self._current()
        out = list(state.records.values())
        out.extend(e.record for kid, e in self._env.items() if kid not in state.records)
        return out

    def get(self, kid: str) -> KeyRecord:
        """The record of ``kid``; ``UnknownKeyError`` for a malformed or unknown id."""
        check_kid(kid)
        record = self._lookup(kid)
        if record is None:
            raise UnknownKeyError(f"no key {kid} in the key store at {self.path}", key_id=kid)
        return record

    def _lookup(self, kid: str, state: _State | None = None) -> KeyRecord | None:
        record = (state or self._current()).records.get(kid)
        if record is None:
            env = self._env.get(kid)
            return env.record if env is not None else None
        return record

    def primary(self) -> KeyRecord:
        """The key ``signer()`` uses: this process's env key if one was loaded, else the
        store's primary. ``NoSigningKeyError`` when there is none."""
        if self._env_primary is not None:
            return self._env[self._env_primary].record
        state = self._current()
        if state.primary is None:
            raise NoSigningKeyError(f"the key store at {self.path} has no primary key")
        return state.records[state.primary]

    # -- mutations --------------------------------------------------------------------------------

    def _mutate(self, change: Callable[[dict[str, KeyRecord]], tuple[list[KeyRecord], Any]]) -> Any:
        """Apply ``change`` to a fresh copy of the records under the lock and write the result
        with one atomic replace. ``change`` may write key material (before the record)."""
        self._after_fork_check()
        with self._mutex, self._lock:
            self._files.ensure_dirs()
            raw, _, _ = _read_store_file(self._file)
            records = _parse_store(raw, self._file)
            new_records, result = change(records)
            primaries = [r.kid for r in new_records if r.status is KeyStatus.PRIMARY]
            if len(primaries) > 1:  # pragma: no cover - guarded by every caller
                raise KeyStoreError(f"internal error: several primaries {primaries}")
            atomic_write(self._file, _dump_store(new_records), mode=KEYSTORE_FILE_MODE)
            return result

    def _env_guard(self, kid: str, action: str) -> None:
        if kid in self._env and kid not in self._current().records:
            raise KeyStoreError(
                f"key {kid} comes from an environment variable and lives only in this process; "
                f"it cannot be {action}",
                key_id=kid,
                hint="change or unset the environment variable instead",
            )

    def _require(self, records: dict[str, KeyRecord], kid: str) -> KeyRecord:
        record = records.get(kid)
        if record is None:
            raise UnknownKeyError(f"no key {kid} in the key store at {self.path}", key_id=kid)
        return record

    def _kid_taken(self, records: dict[str, KeyRecord], kid: str) -> bool:
        return (
            kid in records
            or kid in self._env
            or any(p.exists() for p in self._files.candidate_paths(kid))
        )

    def _make_material(
        self,
        records: dict[str, KeyRecord],
        alg: str,
        expires_in: timedelta | None,
        passphrase_env: str | None,
        status: KeyStatus,
    ) -> KeyRecord:
        """Create a key's material on disk (private first, then public) and its record."""
        if alg not in ALGORITHMS:
            raise AlgorithmMismatchError(
                f"algorithm {safe_kid(alg)} is not one of {', '.join(ALGORITHMS)}",
                hint=f"use one of: {', '.join(ALGORITHMS)}",
            )
        algo = algorithm(alg)
        if passphrase_env is not None:
            check_env_name(passphrase_env, what="passphrase environment variable name")
            algo.check_passphrase_allowed()
        now = self.clock()
        not_after = expiry(now, expires_in)
        password = passphrase(passphrase_env, None) if passphrase_env is not None else None
        while True:  # the kid is derived from the key (a taken one means a leftover file)
            material = algo.generate(password)
            kid = derived_kid("generated", material.fingerprint)
            if not self._kid_taken(records, kid):
                break
        atomic_write(
            self._files.private_path(kid, alg), material.private_file, mode=PRIVATE_FILE_MODE
        )
        if material.public_file is not None:
            atomic_write(
                self._files.public_path(kid, alg), material.public_file, mode=PUBLIC_FILE_MODE
            )
        fingerprint = material.fingerprint
        return KeyRecord(
            kid=kid,
            alg=alg,
            status=status,
            created_at=now,
            not_after=not_after,
            fingerprint=fingerprint,
            has_private=True,
            origin="generated",
            revoked_reason=None,
            passphrase_env=passphrase_env,
        )

    def generate(
        self,
        alg: str,
        *,
        expires_in: timedelta | None = None,
        passphrase_env: str | None = None,
    ) -> str:
        """Create a key and return its kid. It becomes primary when the store has no primary
        (its first key); otherwise it is verify-only until ``promote``d."""

        def change(records: dict[str, KeyRecord]) -> tuple[list[KeyRecord], str]:
            has_primary = any(r.status is KeyStatus.PRIMARY for r in records.values())
            status = KeyStatus.VERIFY_ONLY if has_primary else KeyStatus.PRIMARY
            record = self._make_material(records, alg, expires_in, passphrase_env, status)
            return [*records.values(), record], record.kid

        return self._mutate(change)

    def promote(self, kid: str, *, grace: timedelta | None = None) -> None:
        """Make ``kid`` the primary; the old primary becomes verify-only. With ``grace`` the old
        primary is also retired: it ends (verifies nothing) at now + grace."""
        check_kid(kid)
        self._env_guard(kid, "promoted")
        check_grace(grace)

        def change(records: dict[str, KeyRecord]) -> tuple[list[KeyRecord], None]:
            target = self._require(records, kid)
            check_promotable(target, self.clock)
            now = self.clock()
            out = []
            for r in records.values():
                if r.kid == kid:
                    r = replace(r, status=KeyStatus.PRIMARY)
                elif r.status is KeyStatus.PRIMARY:
                    ends = r.not_after if grace is None else end_date(r, now + grace)
                    r = replace(r, status=KeyStatus.VERIFY_ONLY, not_after=ends)
                out.append(r)
            return out, None

        self._mutate(change)

    def rotate(
        self,
        alg: str | None = None,
        *,
        expires_in: timedelta | None = None,
        passphrase_env: str | None = None,
        grace: timedelta | None = None,
    ) -> str:
        """Generate a key and promote it, in one lock hold and one ``keystore.json`` replace.

        ``alg`` defaults to the current primary's. ``grace`` (optional) gives the old primary a
        ``not_after`` of now + grace, after which it stops verifying (a verify-only key past its
        not_after verifies nothing)."""
        check_grace(grace)

        def change(records: dict[str, KeyRecord]) -> tuple[list[KeyRecord], str]:
            old = next((r for r in records.values() if r.status is KeyStatus.PRIMARY), None)
            use_alg = alg
            if use_alg is None:
                if old is None:
                    raise NoSigningKeyError(
                        f"the key store at {self.path} has no primary key to take the "
                        "algorithm from",
                        hint=f"pass the algorithm: `keys rotate --alg {DEFAULT_ALGORITHM}`",
                    )
                use_alg = old.alg
            record = self._make_material(
                records, use_alg, expires_in, passphrase_env, KeyStatus.PRIMARY
            )
            now = self.clock()
            out = []
            for r in records.values():
                if r.status is KeyStatus.PRIMARY:
                    ends = r.not_after if grace is None else end_date(r, now + grace)
                    r = replace(r, status=KeyStatus.VERIFY_ONLY, not_after=ends)
                out.append(r)
            out.append(record)
            return out, record.kid

        return self._mutate(change)

    def retire(self, kid: str, *, grace: timedelta | None = None) -> datetime:
        """End ``kid``: its not-after becomes now (default) or now + ``grace``, after which it
        verifies nothing; an earlier end date is kept (retiring never extends a key). Returns
        the end date. Retiring the primary is refused: promote another first."""
        check_kid(kid)
        self._env_guard(kid, "retired")
        check_grace(grace)

        def change(records: dict[str, KeyRecord]) -> tuple[list[KeyRecord], None]:
            target = self._require(records, kid)
            if target.status is KeyStatus.PRIMARY:
                raise KeyStoreError(
                    f"key {kid} is the primary; retiring it would leave nothing to sign with",
                    key_id=kid,
                    hint="promote another key first (`keys promote KID`) or run `keys rotate`",
                )
            if target.status in (KeyStatus.REVOKED, KeyStatus.DESTROYED):
                raise KeyStoreError(
                    f"key {kid} is {target.status.value}; it cannot be brought back",
                    key_id=kid,
                    hint="generate a new key instead",
                )
            ended = replace(
                target, not_after=end_date(target, self.clock() + (grace or timedelta(0)))
            )
            out = [ended if r.kid == kid else r for r in records.values()]
            assert ended.not_after is not None
            return out, ended.not_after

        ends: datetime = self._mutate(change)
        return ends

    def revoke(self, kid: str, reason: str) -> None:
        """From now on ``kid`` verifies nothing (and signs nothing). Keeps its material."""
        check_kid(kid)
        self._env_guard(kid, "revoked")
        if not isinstance(reason, str) or not reason.strip():
            raise KeyStoreError("a revocation needs a reason", key_id=kid)
        reason = reason.strip()[:MAX_REASON_CHARS]

        def change(records: dict[str, KeyRecord]) -> tuple[list[KeyRecord], None]:
            target = self._require(records, kid)
            if target.status is KeyStatus.DESTROYED:
                raise KeyStoreError(
                    f"key {kid} is already destroyed (it verifies nothing)", key_id=kid
                )
            out = [
                replace(r, status=KeyStatus.REVOKED, revoked_reason=reason)
                if r.kid == kid and r.status is not KeyStatus.REVOKED
                else r
                for r in records.values()
            ]
            return out, None

        self._mutate(change)

    def destroy(self, kid: str) -> None:
        """Delete ``kid``'s private material; it verifies nothing from now on.

        The record changes first, then the file is unlinked: a crash in between leaves a
        destroyed record and an orphan file that nothing reads (``cleanup_orphans`` removes it).
        """
        check_kid(kid)
        self._env_guard(kid, "destroyed")

        def change(records: dict[str, KeyRecord]) -> tuple[list[KeyRecord], None]:
            self._require(records, kid)
            out = [
                replace(r, status=KeyStatus.DESTROYED, has_private=False) if r.kid == kid else r
                for r in records.values()
            ]
            return out, None

        self._after_fork_check()
        with self._mutex, self._lock:
            self._mutate(change)
            self._files.remove_private(kid)
        self._forget(kid)

    def _forget(self, kid: str) -> None:
        with self._mutex:
            self._signers.pop(kid, None)
        self._files.forget(kid)

    def cleanup_orphans(self) -> list[Path]:
        """Remove key files no live record references (left by a crash, or destroyed keys'
        private files) and stale temp files. Returns what was removed."""
        removed: list[Path] = []
        self._after_fork_check()
        with self._mutex, self._lock:
            self._files.ensure_dirs()
            raw, _, _ = _read_store_file(self._file)
            records = _parse_store(raw, self._file)
            removed.extend(self._files.remove_orphans(records))
            # temp files of an interrupted keystore.json replace
            for entry in sorted(self.path.glob(f".{KEYSTORE_FILE}.*.tmp")):
                entry.unlink()
                removed.append(entry)
        return removed

    # -- public keys ------------------------------------------------------------------------------

    def export_public(self, kid: str) -> bytes:
        """A self-describing public key bundle for ``kid`` (Ed25519 only): comment lines with
        kid, alg, created_at, not_after, fingerprint and status, then the public key PEM.
        OpenSSL and ``cryptography`` read it as a plain PEM; ``import_public`` keeps the kid."""
        check_kid(kid)
        record = self.get(kid)
        algo = algorithm(record.alg)
        if not algo.has_public_half():
            raise algo.no_public_half(kid)
        # A revoked or retired key is exported with its status and end date, so readers that
        # import the bundle learn of it (an import never revives a key).
        return render_bundle(record, self._verify_key(record))

    def import_public(self, pem: bytes, *, kid: str | None = None) -> str:
        """Trust an Ed25519 public key (verify-only, no private half) and return its kid.

        A bundle from ``export_public`` keeps the writer's kid, status and end date. A bare PEM
        gets ``kid`` if given, else ``"pub-"`` + the first 16 hex digits of its fingerprint
        (envelopes naming any id derived from the same key match it by fingerprint). Importing
        the same key again returns its kid and may only end it (an earlier end date, a
        revocation), never revive it; a kid already bound to another key is refused."""
        bundle = parse_bundle(pem)
        algo = algorithm(bundle.alg)
        public = bundle.public
        fingerprint = algo.fingerprint(public)
        new_kid = bundle_kid(bundle, fingerprint, kid)
        env = self._env.get(new_kid)
        if env is not None and env.record.fingerprint != fingerprint:
            raise KeyStoreError(f"key id {new_kid} is bound to another key", key_id=new_kid)

        def change(records: dict[str, KeyRecord]) -> tuple[list[KeyRecord], str]:
            existing = records.get(new_kid)
            if existing is not None:
                merged = check_reimport(existing, bundle, fingerprint)
                out = [merged if r.kid == new_kid else r for r in records.values()]
                return out, new_kid
            atomic_write(
                self._files.public_path(new_kid, bundle.alg),
                algo.serialize_public(public),
                mode=PUBLIC_FILE_MODE,
            )
            record = imported_record(
                bundle, new_kid, fingerprint, bundle.created_at or self.clock()
            )
            return [*records.values(), record], new_kid

        return self._mutate(change)

    def export_secret(self, kid: str) -> str:
        """``kid``'s HMAC secret in the project's key format, for a secret manager that puts it
        in an environment variable (``load_env_key``). Only live HMAC keys have one."""
        record = self.get(kid)
        if algorithm(record.alg).has_public_half():
            raise KeyStoreError(
                f"key {kid} is {record.alg}: it has no shared secret",
                key_id=kid,
                hint=f"share its public key instead: `keys export-public {kid} -k {self.path}`",
            )
        if record.status in DEAD_STATUSES or not record.has_private:
            raise KeyStoreError(f"key {kid} is {record.status.value}; it has no secret", key_id=kid)
        return format_hmac_key(self._files.private_material(record))

    # -- environment keys -------------------------------------------------------------------------

    def load_env_key(self, var: str) -> str:
        """Load a key from the environment variable ``var`` into memory (never written).

        The variable holds an Ed25519 PKCS#8 PEM private key (this process then signs with it:
        it takes precedence over the store's primary for ``signer()``), an Ed25519 public key
        PEM (verify-only, for readers) or a base64 HMAC-SHA256 secret of >= 32 bytes (signs and
        verifies). The kid is ``"env-"`` + the first 16 hex digits of the key's fingerprint, so
        a writer's private PEM and a reader's public PEM get the same kid."""
        loaded = env_key(var, self.clock)
        kid = loaded.record.kid
        with self._mutex:
            if loaded.signer is not None:
                old = self._env_primary
                if old is not None and old != kid:
                    prev = self._env[old]
                    self._env[old] = replace(
                        prev, record=replace(prev.record, status=KeyStatus.VERIFY_ONLY)
                    )
                self._env_primary = kid
            self._env[kid] = loaded
            self._env_gen += 1
        return kid

    # -- key material -----------------------------------------------------------------------------

    def _verify_key(self, record: KeyRecord) -> Any:
        env = self._env.get(record.kid)
        if record.origin == "env" and env is not None:
            return env.verify_key
        return self._files.verify_key(record)

    def _prepared_verify_key(self, record: KeyRecord) -> Any:
        """What ``algorithm(record.alg).verify`` takes: the verify key, with any per-key state
        the algorithm prepares (an HMAC keyed once) - cached with the material it came from."""
        env = self._env.get(record.kid)
        if record.origin == "env" and env is not None:
            return env.verify_key  # bytes: prepared per call (env keys are rare readers)
        return self._files.prepared_verify_key(record)

    # -- signing ----------------------------------------------------------------------------------

    def signer(self, kid: str | None = None) -> SigningKey:
        """The key to sign with: ``kid``, or the primary (see ``primary()``) when None.

        ``NoSigningKeyError`` unless the key is primary, holds private material and is not
        expired."""
        if kid is None:
            record = self.primary()
        else:
            check_kid(kid)
            found = self._lookup(kid)
            if found is None:
                raise NoSigningKeyError(f"no key {kid} in the key store at {self.path}", key_id=kid)
            record = found
        why = signing_refusal(record, self.clock())
        if why is not None:
            raise NoSigningKeyError(f"key {record.kid} cannot sign: {why}", key_id=record.kid)
        if record.origin == "env":
            same = self._current().by_fp.get(record.fingerprint[:16], ())
            stored = next(
                (
                    r
                    for r in same
                    if r.fingerprint == record.fingerprint and r.status in DEAD_STATUSES
                ),
                None,
            )
            if stored is not None:
                raise NoSigningKeyError(
                    f"key {record.kid} from the environment is {stored.status.value} in the key "
                    f"store at {self.path} (as {stored.kid})",
                    key_id=record.kid,
                    hint="put a new key in the environment variable",
                )
            env = self._env[record.kid]
            assert env.signer is not None
            return env.signer
        path = self._files.private_file(record)
        sig = self._files.stat_private(path, record.kid)
        hit = self._signers.get(record.kid)
        if hit is not None and hit[0] == sig:
            return hit[1]
        signer = algorithm(record.alg).signer(record.kid, self._files.private_material(record))
        with self._mutex:
            self._signers[record.kid] = (sig, signer)
        return signer

    # -- verification -----------------------------------------------------------------------------

    def verify(
        self,
        *,
        kid: str,
        alg: str,
        message: bytes,
        signature: bytes,
        signed_at: datetime,
        artifact: str | None = None,
    ) -> KeyRecord:
        """Check ``signature`` over ``message`` by key ``kid``; return the key's record.

        Order: key id shape and lookup (``UnknownKeyError``), the header's algorithm against the
        key's (``AlgorithmMismatchError``), status (``RevokedKeyError``), expiry
        (``ExpiredKeyError``), signature length and value (``TamperedPayloadError``). A naive
        ``signed_at`` is read as UTC. A key id derived from a fingerprint (``kid_fingerprint``)
        that the store does not hold matches the store's key with that fingerprint; when the
        store holds one key under several ids, the strictest record decides."""
        check_kid(kid, artifact=artifact)
        record = self._verifier(kid, artifact, self._current())  # one freshness check
        if not isinstance(alg, str) or alg not in ALGORITHMS or alg != record.alg:
            raise AlgorithmMismatchError(
                f"the envelope names algorithm {safe_kid(alg)} but key {kid} is bound to "
                f"{record.alg}",
                artifact=artifact,
                key_id=kid,
            )
        check_verifiable(record, signed_at, self.clock, artifact=artifact)
        algo = algorithm(record.alg)
        if (
            not isinstance(signature, bytes | bytearray | memoryview)
            or len(signature) != algo.signature_size
        ):
            raise TamperedPayloadError(
                f"the signature is not {algo.signature_size} bytes of {record.alg}",
                artifact=artifact,
                key_id=kid,
            )
        prepared = self._prepared_verify_key(record)  # the key file's checks, on every call
        if algo.proves_own and self._own_signature(record, kid, message, signature):
            return record
        if not algo.verify(prepared, message, signature):
            raise TamperedPayloadError(algo.mismatch_message(), artifact=artifact, key_id=kid)
        return record

    def _own_signature(
        self, record: KeyRecord, kid: str, message: Any, signature: Any
    ) -> bool:
        """Whether ``signature`` over ``message`` is provably ``record``'s key's own, without a
        verification (SECURITY.md, "Own signatures"): this process signed exactly these bytes
        with exactly this key (the memo), or it holds the key's private half and signing
        ``message`` again gives exactly ``signature`` (deterministic Ed25519). False proves
        nothing: the caller verifies."""
        if type(message) is not bytes:
            return False
        if OWN_SIGNATURES.confirms(record.alg, kid, record.fingerprint, message, signature):
            return True
        signer: Any = None
        env = self._env.get(record.kid)
        if record.origin == "env":
            signer = env.signer if env is not None else None
        else:
            hit = self._signers.get(record.kid)
            signer = hit[1] if hit is not None else None
        if (
            signer is None
            or signer.alg != record.alg
            or getattr(signer, "fingerprint", None) != record.fingerprint
        ):
            return False
        return bool(signer.made(message, signature))

    def _verifier(self, kid: str, artifact: str | None, state: _State) -> KeyRecord:
        """The record that decides whether ``kid``'s signatures verify (``UnknownKeyError``),
        from the one ``state`` the caller read (no second look at keystore.json). Resolved once
        per (state, env keys): the answer is a function of those two alone, and any change of
        keystore.json is a new state (its freshness check runs on every call, before this)."""
        hit = self._verifiers.get(kid)
        if hit is not None and hit[0] is state and hit[1] == self._env_gen:
            return hit[2]
        gen = self._env_gen
        record = self._resolve_verifier(kid, artifact, state)
        with self._mutex:
            if len(self._verifiers) >= 1024:
                self._verifiers.clear()
            self._verifiers[kid] = (state, gen, record)
        return record

    def _resolve_verifier(self, kid: str, artifact: str | None, state: _State) -> KeyRecord:
        record = self._lookup(kid, state)
        fp = record.fingerprint[:16] if record is not None else kid_fingerprint(kid)
        same: list[KeyRecord] = []
        if fp is not None:
            same.extend(state.by_fp.get(fp, ()))
            same.extend(e.record for e in self._env.values() if e.record.fingerprint[:16] == fp)
        return match_fingerprint(record, kid, fp, same, store=self.path, artifact=artifact)

    # -- ledger -----------------------------------------------------------------------------------

    @property
    def ledger(self) -> Ledger:
        """The digest ledger (``ledger.sqlite3`` in this folder), opened on first use."""
        ledger = self._ledger
        if ledger is None:

            with self._mutex:
                if self._ledger is None:
                    path = self.path / LEDGER_FILE
                    if path.exists():
                        check_owner(path, what="ledger")
                    self._ledger = Ledger(path)
                ledger = self._ledger
        return ledger

    def attach_ledger(self, ledger: LedgerBackend) -> None:
        """Use ``ledger`` (e.g. a shared PostgreSQL one, ``ledger_api.open_ledger``) from now on."""
        with self._mutex:
            self._ledger = ledger  # type: ignore[assignment]
