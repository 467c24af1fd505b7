"""The key store: key records, private and public key material, ``signer()`` and ``verify()``.

A key store is a folder (layout and file formats in ``keys/README.md``)::

    <store>/keystore.json        every key record, replaced atomically as one file
    <store>/keystore.lock        inter-process lock serializing every mutation
    <store>/private/<kid>.pem    Ed25519 PKCS#8 PEM (optionally passphrase-encrypted), 0600
    <store>/private/<kid>.hmac   base64 of a >= 32-byte HMAC-SHA256 secret, 0600
    <store>/public/<kid>.pub.pem Ed25519 SubjectPublicKeyInfo PEM, 0644
    <store>/ledger.sqlite3       the digest ledger (``core/ledger.py``)

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
- Private material readable by group or others is refused (``KeyPermissionError`` with the
  ``chmod`` that fixes it). HMAC secrets shorter than 32 bytes are ``WeakKeyError``. A passphrase
  only ever encrypts a PEM file; it is never used as a key.

The hot path (``signer`` / ``verify``) costs a ``stat`` of ``keystore.json`` and of the key file:
records are re-parsed only when the file's inode, size, mtime or ctime changed, and loaded key
objects are cached per (key id, file identity).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .errors import (
    AlgorithmMismatchError,
    ExpiredKeyError,
    KeyPermissionError,
    KeyStoreError,
    NoSigningKeyError,
    RevokedKeyError,
    TamperedPayloadError,
    UnknownKeyError,
    WeakKeyError,
)
from .fsutil import (
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    InterProcessLock,
    atomic_write,
    check_private_mode,
    fsync_dir,
    open_no_follow,
)

if TYPE_CHECKING:
    from .ledger import Ledger

__all__ = [
    "ALGORITHMS",
    "ED25519",
    "HMAC_SHA256",
    "KID_RE",
    "MIN_HMAC_SECRET_BYTES",
    "KeyRecord",
    "KeyStatus",
    "KeyStore",
    "SigningKey",
    "check_kid",
    "safe_kid",
]

ED25519 = "ed25519"
HMAC_SHA256 = "hmac-sha256"
ALGORITHMS: tuple[str, ...] = (ED25519, HMAC_SHA256)  # the allow-list, exact lowercase match

KID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
MIN_HMAC_SECRET_BYTES = 32
HMAC_SECRET_BYTES = 32
# An HMAC secret with fewer distinct byte values than this is not random (e.g. all zeros, a
# repeated character); 32 random bytes have ~30 distinct values, < 12 has odds below 1e-12.
MIN_DISTINCT_SECRET_BYTES = 12
SIGNATURE_LENGTH = {ED25519: 64, HMAC_SHA256: 32}

STORE_FORMAT = "dagster-wandb-secure/keystore"
STORE_VERSION = 1
BUNDLE_TITLE = "# dagster-wandb-secure public key v1"
HMAC_FINGERPRINT_TAG = b"dagster-wandb-secure/hmac-sha256-fingerprint/v1\x00"
DERIVED_KID_PREFIXES = {"env": "env-", "pub": "pub-"}

KEYSTORE_FILE = "keystore.json"
LOCK_FILE = "keystore.lock"
LEDGER_FILE = "ledger.sqlite3"
PRIVATE_DIR = "private"
PUBLIC_DIR = "public"
PUBLIC_FILE_MODE = 0o644
KEYSTORE_FILE_MODE = 0o644

MAX_KEYSTORE_BYTES = 16 * 1024 * 1024
MAX_KEY_FILE_BYTES = 64 * 1024
MAX_REASON_CHARS = 1000

ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
ORIGINS_STORED = ("generated", "imported-public")
ORIGINS = (*ORIGINS_STORED, "env")
_RECORD_FIELDS = (
    "kid",
    "alg",
    "status",
    "created_at",
    "not_after",
    "fingerprint",
    "has_private",
    "origin",
    "revoked_reason",
    "passphrase_env",
)


class KeyStatus(StrEnum):
    PRIMARY = "primary"
    VERIFY_ONLY = "verify-only"
    REVOKED = "revoked"
    DESTROYED = "destroyed"


@dataclass(frozen=True)
class KeyRecord:
    """Everything the store knows about one key (never the key material itself)."""

    kid: str
    alg: str
    status: KeyStatus
    created_at: datetime
    not_after: datetime | None
    fingerprint: str  # sha256 hex of the raw public key (ed25519) / of tag + secret (hmac)
    has_private: bool  # False for imported public keys and destroyed keys
    origin: str  # "generated" | "imported-public" | "env"
    revoked_reason: str | None
    passphrase_env: str | None

    def can_sign(self, now: datetime) -> bool:
        """A key signs only while primary, holding private material and not expired."""
        return (
            self.status is KeyStatus.PRIMARY
            and self.has_private
            and (self.not_after is None or now <= self.not_after)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "alg": self.alg,
            "status": self.status.value,
            "created_at": _fmt_time(self.created_at),
            "not_after": _fmt_time(self.not_after) if self.not_after else None,
            "fingerprint": self.fingerprint,
            "has_private": self.has_private,
            "origin": self.origin,
            "revoked_reason": self.revoked_reason,
            "passphrase_env": self.passphrase_env,
        }


@runtime_checkable
class SigningKey(Protocol):
    kid: str
    alg: str

    def sign(self, message: bytes) -> bytes: ...


class _Signer:
    """Base of the in-memory signers: its repr names the key, never the key material."""

    __slots__ = ("kid", "alg")

    def __init__(self, kid: str, alg: str) -> None:
        self.kid = kid
        self.alg = alg

    def __repr__(self) -> str:
        return f"<SigningKey kid={self.kid} alg={self.alg}>"


class _HmacSigner(_Signer):
    __slots__ = ("_secret",)

    def __init__(self, kid: str, secret: bytes) -> None:
        super().__init__(kid, HMAC_SHA256)
        self._secret = secret

    def sign(self, message: bytes) -> bytes:
        return hmac.digest(self._secret, message, "sha256")


class _Ed25519Signer(_Signer):
    __slots__ = ("_key",)

    def __init__(self, kid: str, key: Ed25519PrivateKey) -> None:
        super().__init__(kid, ED25519)
        self._key = key

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


# --- small helpers -------------------------------------------------------------------------------


def safe_kid(kid: object) -> str:
    """A bounded, printable rendering of an untrusted key id, for error messages."""
    if isinstance(kid, str) and KID_RE.fullmatch(kid):
        return kid
    if isinstance(kid, str | bytes):
        text = ascii(kid[:40])
        if len(kid) > 40:
            text += f"...({len(kid)} chars)"
        return text
    return f"<{type(kid).__name__}>"


def check_kid(kid: object, *, artifact: str | None = None) -> str:
    """Return ``kid`` if it is a well-formed key id; ``UnknownKeyError`` otherwise."""
    if not isinstance(kid, str) or len(kid) > 64 or not KID_RE.fullmatch(kid):
        raise UnknownKeyError(
            "malformed key id (key ids are 1-64 characters of a-z, 0-9 and '-', starting "
            "with a letter or digit)",
            artifact=artifact,
            key_id=safe_kid(kid),
        )
    return kid


def _now() -> datetime:
    return datetime.now(UTC)


def _fmt_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _aware(value: datetime) -> datetime:
    """Timestamps are UTC; a naive datetime is read as UTC (the envelope writes UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _parse_time(value: object, what: str) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError(f"{what} is not a timestamp string")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"{what} {value!r} has no time zone")
    return parsed.astimezone(UTC)


def _ed25519_fingerprint(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def _hmac_fingerprint(secret: bytes) -> str:
    return hashlib.sha256(HMAC_FINGERPRINT_TAG + secret).hexdigest()


def _public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_hmac_secret(secret: bytes, *, key_id: str | None, where: str) -> bytes:
    if len(secret) < MIN_HMAC_SECRET_BYTES:
        raise WeakKeyError(
            f"the HMAC secret in {where} is {len(secret)} bytes; at least "
            f"{MIN_HMAC_SECRET_BYTES} random bytes are required",
            key_id=key_id,
        )
    if len(set(secret)) < MIN_DISTINCT_SECRET_BYTES:
        raise WeakKeyError(
            f"the HMAC secret in {where} is not random (only {len(set(secret))} distinct byte "
            "values); a passphrase or a repeated pattern is not a key",
            key_id=key_id,
        )
    return secret


def _decode_b64_secret(text: bytes) -> bytes:
    """Strict base64 (standard or URL-safe alphabet, padding optional, whitespace ignored)."""
    compact = b"".join(text.split())
    if not compact:
        raise ValueError("empty")
    if b"-" in compact or b"_" in compact:
        compact = compact.replace(b"-", b"+").replace(b"_", b"/")
    compact += b"=" * (-len(compact) % 4)
    return base64.b64decode(compact, validate=True)


def _check_env_name(name: object, *, what: str = "environment variable name") -> str:
    if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
        raise KeyStoreError(
            f"invalid {what} {safe_kid(name)}: use letters, digits and '_'",
            hint="pass the NAME of an environment variable, never its value",
        )
    return name


def _strict_json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _record_from_json(obj: object) -> KeyRecord:
    if not isinstance(obj, dict):
        raise ValueError("a key record is not a JSON object")
    if set(obj) != set(_RECORD_FIELDS):
        missing = sorted(set(_RECORD_FIELDS) - set(obj))
        extra = sorted(set(obj) - set(_RECORD_FIELDS))
        raise ValueError(f"key record fields wrong (missing {missing}, unexpected {extra})")
    kid = obj["kid"]
    if not isinstance(kid, str) or not KID_RE.fullmatch(kid):
        raise ValueError(f"malformed key id {safe_kid(kid)}")
    alg = obj["alg"]
    if alg not in ALGORITHMS:
        raise ValueError(f"key {kid}: algorithm {safe_kid(alg)} is not in the allow-list")
    try:
        status = KeyStatus(obj["status"])
    except ValueError:
        raise ValueError(f"key {kid}: unknown status {safe_kid(obj['status'])}") from None
    created_at = _parse_time(obj["created_at"], f"key {kid} created_at")
    not_after = (
        None if obj["not_after"] is None else _parse_time(obj["not_after"], f"key {kid} not_after")
    )
    fingerprint = obj["fingerprint"]
    if not isinstance(fingerprint, str) or not re.fullmatch(r"[0-9a-f]{64}", fingerprint):
        raise ValueError(f"key {kid}: fingerprint is not 64 lowercase hex digits")
    has_private = obj["has_private"]
    if not isinstance(has_private, bool):
        raise ValueError(f"key {kid}: has_private is not a boolean")
    origin = obj["origin"]
    if origin not in ORIGINS_STORED:
        raise ValueError(f"key {kid}: origin {safe_kid(origin)} is not one of {ORIGINS_STORED}")
    reason = obj["revoked_reason"]
    if reason is not None and not isinstance(reason, str):
        raise ValueError(f"key {kid}: revoked_reason is not a string")
    passphrase_env = obj["passphrase_env"]
    if passphrase_env is not None and (
        not isinstance(passphrase_env, str) or not ENV_NAME_RE.fullmatch(passphrase_env)
    ):
        raise ValueError(f"key {kid}: passphrase_env is not an environment variable name")
    if status is KeyStatus.PRIMARY and not has_private:
        raise ValueError(f"key {kid}: a primary key must hold private material")
    if status is KeyStatus.DESTROYED and has_private:
        raise ValueError(f"key {kid}: a destroyed key cannot hold private material")
    if origin == "imported-public" and (has_private or alg != ED25519):
        raise ValueError(f"key {kid}: an imported public key must be ed25519 without private")
    return KeyRecord(
        kid=kid,
        alg=alg,
        status=status,
        created_at=created_at,
        not_after=not_after,
        fingerprint=fingerprint,
        has_private=has_private,
        origin=origin,
        revoked_reason=reason,
        passphrase_env=passphrase_env,
    )


def _parse_store(raw: bytes, where: Path) -> dict[str, KeyRecord]:
    try:
        doc = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_strict_json_object,
            parse_constant=_reject_constant,
        )
        if not isinstance(doc, dict) or doc.get("format") != STORE_FORMAT:
            raise ValueError(f"not a key store file (format must be {STORE_FORMAT!r})")
        if doc.get("version") != STORE_VERSION:
            raise ValueError(
                f"unsupported key store version {safe_kid(doc.get('version'))} "
                f"(this library reads version {STORE_VERSION})"
            )
        if set(doc) != {"format", "version", "keys"} or not isinstance(doc["keys"], list):
            raise ValueError("unexpected top-level fields")
        records: dict[str, KeyRecord] = {}
        for item in doc["keys"]:
            record = _record_from_json(item)
            if record.kid in records:
                raise ValueError(f"key id {record.kid} appears twice")
            records[record.kid] = record
        primaries = [r.kid for r in records.values() if r.status is KeyStatus.PRIMARY]
        if len(primaries) > 1:
            raise ValueError(f"more than one primary key: {primaries}")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise KeyStoreError(
            f"{where} is corrupt: {exc}",
            hint=f"restore {where.name} from a backup; never edit it by hand",
        ) from None
    return records


def _dump_store(records: Iterable[KeyRecord]) -> bytes:
    doc = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "keys": [r.to_json() for r in records],
    }
    return (json.dumps(doc, indent=2, ensure_ascii=True, allow_nan=False) + "\n").encode()


@dataclass(frozen=True)
class _State:
    sig: tuple[int, ...]
    records: dict[str, KeyRecord]
    primary: str | None
    # An open descriptor of the keystore.json that was parsed. While it is open the file's inode
    # cannot be freed and reused, so every atomic replace shows up as a new inode number, even
    # when size and (coarse) mtime stay the same.
    pin_fd: int


@dataclass(frozen=True)
class _EnvKey:
    record: KeyRecord
    signer: SigningKey | None
    secret: bytes | None  # hmac
    public: Ed25519PublicKey | None  # ed25519


def _file_sig(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# --- the store -----------------------------------------------------------------------------------


class KeyStore:
    """A folder of keys. Thread-safe; safe to use from several processes at once."""

    path: Path

    def __init__(self, path: Path, *, clock: Callable[[], datetime] | None = None) -> None:
        """Use ``KeyStore.open``; this constructor does no I/O and no checks."""
        self.path = path
        self.clock: Callable[[], datetime] = clock or _now
        self._file = path / KEYSTORE_FILE
        self._private_dir = path / PRIVATE_DIR
        self._public_dir = path / PUBLIC_DIR
        self._lock = InterProcessLock(path / LOCK_FILE)
        self._mutex = threading.RLock()
        self._state: _State | None = None
        self._signers: dict[str, tuple[tuple[int, ...], SigningKey]] = {}
        self._secrets: dict[str, tuple[tuple[int, ...], bytes]] = {}
        self._publics: dict[str, tuple[tuple[int, ...], Ed25519PublicKey]] = {}
        self._env: dict[str, _EnvKey] = {}
        self._env_primary: str | None = None
        self._paths: dict[tuple[str, str], str] = {}
        self._pid = os.getpid()
        self._ledger: Ledger | None = None
        self._dirs_checked = False

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
            if not create:
                raise KeyStoreError(
                    f"no key store at {path}",
                    hint=f"create one with `dagster-wandb-secure keys generate --key-store {path} --alg ed25519`",
                )
            path.mkdir(parents=True, mode=PRIVATE_DIR_MODE, exist_ok=True)
            os.chmod(path, PRIVATE_DIR_MODE)
        path = path.resolve()
        if not path.is_dir():
            raise KeyStoreError(f"{path} is not a folder", hint="point the key store at a folder")
        store = cls(path, clock=clock)
        store._check_not_writable_by_others(path)
        if not store._file.exists():
            if not create:
                raise KeyStoreError(
                    f"{path} holds no {KEYSTORE_FILE}",
                    hint=f"create one with `dagster-wandb-secure keys generate --key-store {path} --alg ed25519`",
                )
            with store._lock:
                if not store._file.exists():
                    # A new store: make its folder private even if it already existed (e.g. a
                    # checked-out keys/ folder) - it is about to hold key material.
                    os.chmod(path, PRIVATE_DIR_MODE)
                    store._ensure_dirs()
                    atomic_write(store._file, _dump_store([]), mode=KEYSTORE_FILE_MODE)
        state = store._current()
        if any(r.has_private for r in state.records.values()):
            store._check_private_dirs()
        return store

    def _ensure_dirs(self) -> None:
        for folder in (self._private_dir, self._public_dir):
            if not folder.exists():
                folder.mkdir(mode=PRIVATE_DIR_MODE if folder is self._private_dir else 0o755)
        os.chmod(self._private_dir, PRIVATE_DIR_MODE)

    @staticmethod
    def _check_not_writable_by_others(path: Path) -> None:
        st = path.stat()
        if st.st_mode & 0o022:
            raise KeyPermissionError(
                f"{path} has mode {stat.S_IMODE(st.st_mode):o}, writable by group or others: "
                "anyone in them could replace the trusted keys",
                hint=f"run: chmod 700 {path}",
            )

    def _check_private_dirs(self) -> None:
        check_private_mode(self.path)
        if self._private_dir.exists():
            check_private_mode(self._private_dir)
        self._dirs_checked = True

    # -- reading records --------------------------------------------------------------------------

    def _after_fork_check(self) -> None:
        """In a forked child, drop the parent's locks: another parent thread may have held
        the mutex, and an inherited lock file descriptor would share the parent's lock."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._mutex = threading.RLock()
            self._lock = InterProcessLock(self.path / LOCK_FILE)

    def _current(self) -> _State:
        """The records, re-read only when keystore.json changed (one ``stat`` on a hit)."""
        self._after_fork_check()
        try:
            st = os.stat(self._file)
        except FileNotFoundError:
            raise KeyStoreError(
                f"{self._file} is missing",
                hint="restore it from a backup, or open the folder as a new key store",
            ) from None
        state = self._state
        if state is not None and state.sig == _file_sig(st):
            return state
        return self._reload()

    def _read_file(self, *, pin: bool = False) -> tuple[bytes, os.stat_result, int | None]:
        """Read keystore.json (no symlinks, bounded); with ``pin`` keep its descriptor open
        and return it."""
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self._file, flags)
        except FileNotFoundError:
            raise KeyStoreError(
                f"{self._file} is missing",
                hint="restore it from a backup, or open the folder as a new key store",
            ) from None
        except OSError as exc:
            raise KeyStoreError(
                f"cannot open {self._file}: {exc.strerror}",
                hint=f"{KEYSTORE_FILE} must be a regular file, not a symlink",
            ) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise KeyStoreError(f"{self._file} is not a regular file")
            if st.st_mode & 0o022:
                raise KeyPermissionError(
                    f"{self._file} has mode {stat.S_IMODE(st.st_mode):o}, writable by group "
                    "or others",
                    hint=f"run: chmod 644 {self._file}",
                )
            if st.st_size > MAX_KEYSTORE_BYTES:
                raise KeyStoreError(f"{self._file} is larger than {MAX_KEYSTORE_BYTES} bytes")
            chunks = []
            remaining = MAX_KEYSTORE_BYTES + 1
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            raw = b"".join(chunks)
            if len(raw) > MAX_KEYSTORE_BYTES:
                raise KeyStoreError(f"{self._file} is larger than {MAX_KEYSTORE_BYTES} bytes")
        except BaseException:
            os.close(fd)
            raise
        if pin:
            return raw, st, fd
        os.close(fd)
        return raw, st, None

    def _reload(self) -> _State:
        with self._mutex:
            raw, st, fd = self._read_file(pin=True)
            assert fd is not None
            try:
                records = _parse_store(raw, self._file)
            except BaseException:
                os.close(fd)
                raise
            primary = next((r.kid for r in records.values() if r.status is KeyStatus.PRIMARY), None)
            old, self._state = (
                self._state,
                _State(sig=_file_sig(st), records=records, primary=primary, pin_fd=fd),
            )
            if old is not None:
                self._close_pin(old)
            return self._state

    def _close_pin(self, state: _State) -> None:
        with contextlib.suppress(OSError):
            os.close(state.pin_fd)

    def close(self) -> None:
        """Release the descriptor this object keeps on keystore.json and the ledger's
        connection. The object stays usable (a later call re-reads)."""
        with self._mutex:
            state, self._state = self._state, None
            if state is not None:
                self._close_pin(state)
            if self._ledger is not None:
                self._ledger.close()

    def __del__(self) -> None:
        state = getattr(self, "_state", None)
        if state is not None:
            with contextlib.suppress(Exception):
                os.close(state.pin_fd)

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

    def _lookup(self, kid: str) -> KeyRecord | None:
        record = self._current().records.get(kid)
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
            self._ensure_dirs()
            raw, _, _ = self._read_file()
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

    def _new_kid(self, records: dict[str, KeyRecord]) -> str:
        while True:
            kid = secrets.token_hex(8)
            if kid in records or kid in self._env:
                continue
            if any(
                p.exists()
                for p in (
                    self._private_dir / f"{kid}.pem",
                    self._private_dir / f"{kid}.hmac",
                    self._public_dir / f"{kid}.pub.pem",
                )
            ):
                continue
            return kid

    def _passphrase(self, var: str, kid: str | None) -> bytes:
        value = os.environ.get(var)
        if not value:
            raise KeyStoreError(
                f"the passphrase environment variable {var} is not set or empty",
                key_id=kid,
                hint=f"export {var} with the passphrase that encrypts this key's PEM file",
            )
        return value.encode("utf-8")

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
        if passphrase_env is not None:
            _check_env_name(passphrase_env, what="passphrase environment variable name")
            if alg != ED25519:
                raise KeyStoreError(
                    "only ed25519 PEM files can be passphrase-encrypted; an HMAC secret is "
                    "protected by the file mode alone",
                    hint="drop --passphrase-env, or use --alg ed25519",
                )
        now = self.clock()
        not_after = None
        if expires_in is not None:
            if not isinstance(expires_in, timedelta) or expires_in <= timedelta(0):
                raise KeyStoreError(
                    f"expires_in must be a positive duration, not {expires_in!r}",
                    hint="pass e.g. timedelta(days=90)",
                )
            not_after = now + expires_in
        kid = self._new_kid(records)
        if alg == ED25519:
            key = Ed25519PrivateKey.generate()
            encryption: serialization.KeySerializationEncryption = (
                serialization.BestAvailableEncryption(self._passphrase(passphrase_env, kid))
                if passphrase_env is not None
                else serialization.NoEncryption()
            )
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
            )
            atomic_write(self._private_dir / f"{kid}.pem", pem, mode=PRIVATE_FILE_MODE)
            atomic_write(
                self._public_dir / f"{kid}.pub.pem",
                _public_pem(key.public_key()),
                mode=PUBLIC_FILE_MODE,
            )
            fingerprint = _ed25519_fingerprint(key.public_key())
        else:
            secret = secrets.token_bytes(HMAC_SECRET_BYTES)
            atomic_write(
                self._private_dir / f"{kid}.hmac",
                base64.b64encode(secret) + b"\n",
                mode=PRIVATE_FILE_MODE,
            )
            fingerprint = _hmac_fingerprint(secret)
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

    def _promotable(self, record: KeyRecord) -> None:
        if record.status in (KeyStatus.REVOKED, KeyStatus.DESTROYED):
            raise KeyStoreError(
                f"key {record.kid} is {record.status.value} and can never sign again",
                key_id=record.kid,
                hint="rotate to a new key: `dagster-wandb-secure keys rotate`",
            )
        if not record.has_private:
            raise KeyStoreError(
                f"key {record.kid} is a public key only; it cannot sign",
                key_id=record.kid,
                hint="promote a key generated in this store",
            )
        if record.not_after is not None and self.clock() > record.not_after:
            raise KeyStoreError(
                f"key {record.kid} expired at {_fmt_time(record.not_after)}",
                key_id=record.kid,
                hint="rotate to a new key: `dagster-wandb-secure keys rotate`",
            )

    def promote(self, kid: str) -> None:
        """Make ``kid`` the primary; the old primary becomes verify-only."""
        check_kid(kid)
        self._env_guard(kid, "promoted")

        def change(records: dict[str, KeyRecord]) -> tuple[list[KeyRecord], None]:
            target = self._require(records, kid)
            self._promotable(target)
            out = []
            for r in records.values():
                if r.kid == kid:
                    r = replace(r, status=KeyStatus.PRIMARY)
                elif r.status is KeyStatus.PRIMARY:
                    r = replace(r, status=KeyStatus.VERIFY_ONLY)
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
        if grace is not None and (not isinstance(grace, timedelta) or grace < timedelta(0)):
            raise KeyStoreError(f"grace must be a non-negative duration, not {grace!r}")

        def change(records: dict[str, KeyRecord]) -> tuple[list[KeyRecord], str]:
            old = next((r for r in records.values() if r.status is KeyStatus.PRIMARY), None)
            use_alg = alg
            if use_alg is None:
                if old is None:
                    raise NoSigningKeyError(
                        f"the key store at {self.path} has no primary key to take the "
                        "algorithm from",
                        hint="pass the algorithm: `keys rotate --alg ed25519`",
                    )
                use_alg = old.alg
            record = self._make_material(
                records, use_alg, expires_in, passphrase_env, KeyStatus.PRIMARY
            )
            now = self.clock()
            out = []
            for r in records.values():
                if r.status is KeyStatus.PRIMARY:
                    not_after = r.not_after
                    if grace is not None and (not_after is None or now + grace < not_after):
                        not_after = now + grace
                    r = replace(r, status=KeyStatus.VERIFY_ONLY, not_after=not_after)
                out.append(r)
            out.append(record)
            return out, record.kid

        return self._mutate(change)

    def retire(self, kid: str) -> None:
        """Make ``kid`` verify-only. Retiring the primary is refused: promote another first."""
        check_kid(kid)
        self._env_guard(kid, "retired")

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
            return list(records.values()), None

        self._mutate(change)

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
            self._remove_private(kid)
        self._forget(kid)

    def _remove_private(self, kid: str) -> None:
        removed = False
        for name in (f"{kid}.pem", f"{kid}.hmac"):
            with contextlib.suppress(FileNotFoundError):
                (self._private_dir / name).unlink()
                removed = True
        if removed:
            fsync_dir(self._private_dir)

    def _forget(self, kid: str) -> None:
        with self._mutex:
            self._signers.pop(kid, None)
            self._secrets.pop(kid, None)
            self._publics.pop(kid, None)

    def cleanup_orphans(self) -> list[Path]:
        """Remove key files no live record references (left by a crash, or destroyed keys'
        private files) and stale temp files. Returns what was removed."""
        removed: list[Path] = []
        self._after_fork_check()
        with self._mutex, self._lock:
            self._ensure_dirs()
            raw, _, _ = self._read_file()
            records = _parse_store(raw, self._file)
            keep_private = {
                f"{r.kid}.pem" if r.alg == ED25519 else f"{r.kid}.hmac"
                for r in records.values()
                if r.has_private
            }
            keep_public = {f"{r.kid}.pub.pem" for r in records.values() if r.alg == ED25519}
            for folder, keep in (
                (self._private_dir, keep_private),
                (self._public_dir, keep_public),
            ):
                for entry in sorted(folder.iterdir()):
                    if entry.name not in keep and (entry.is_file() or entry.is_symlink()):
                        entry.unlink()
                        removed.append(entry)
                fsync_dir(folder)
            # temp files of an interrupted keystore.json replace
            for entry in sorted(self.path.glob(f".{KEYSTORE_FILE}.*.tmp")):
                entry.unlink()
                removed.append(entry)
        return removed

    # -- public keys ------------------------------------------------------------------------------

    def export_public(self, kid: str) -> bytes:
        """A self-describing public key bundle for ``kid`` (Ed25519 only): comment lines with
        kid, alg, created_at, not_after and fingerprint, then the public key PEM. OpenSSL and
        ``cryptography`` read it as a plain PEM; ``import_public`` keeps the kid."""
        check_kid(kid)
        record = self.get(kid)
        if record.alg != ED25519:
            raise KeyStoreError(
                f"key {kid} is {record.alg}: an HMAC key has no public half to export",
                key_id=kid,
                hint="share an HMAC secret only through a secret manager (load_env_key), or "
                "use an ed25519 key for readers outside this trust boundary",
            )
        if record.status in (KeyStatus.REVOKED, KeyStatus.DESTROYED):
            raise KeyStoreError(
                f"key {kid} is {record.status.value}; exporting it would spread a key that "
                "verifies nothing",
                key_id=kid,
            )
        public = self._public_key(record)
        lines = [
            BUNDLE_TITLE,
            f"# kid: {record.kid}",
            f"# alg: {record.alg}",
            f"# created_at: {_fmt_time(record.created_at)}",
            f"# not_after: {_fmt_time(record.not_after) if record.not_after else 'none'}",
            f"# fingerprint: sha256:{record.fingerprint}",
        ]
        return ("\n".join(lines) + "\n").encode("ascii") + _public_pem(public)

    def import_public(self, pem: bytes, *, kid: str | None = None) -> str:
        """Trust an Ed25519 public key (verify-only, no private half) and return its kid.

        A bundle from ``export_public`` keeps the writer's kid, so the reader verifies the
        writer's envelopes. A bare PEM gets ``kid`` if given, else ``"pub-"`` + the first 16 hex
        digits of its fingerprint. Importing the same key again returns its kid; a kid that is
        already bound to another key, or revoked/destroyed here, is refused."""
        bundle = _parse_bundle(pem)
        public = bundle.public
        fingerprint = _ed25519_fingerprint(public)
        if bundle.fingerprint is not None and not hmac.compare_digest(
            bundle.fingerprint, fingerprint
        ):
            raise KeyStoreError(
                "the bundle's fingerprint does not match its public key",
                key_id=safe_kid(bundle.kid),
                hint="the file was altered in transit; export it again from the writer",
            )
        new_kid = bundle.kid if bundle.kid is not None else kid
        if bundle.kid is not None and kid is not None and kid != bundle.kid:
            raise KeyStoreError(
                f"the bundle names key id {bundle.kid} but {safe_kid(kid)} was requested",
                key_id=bundle.kid,
            )
        if new_kid is None:
            new_kid = DERIVED_KID_PREFIXES["pub"] + fingerprint[:16]
        check_kid(new_kid)
        for prefix in DERIVED_KID_PREFIXES.values():
            if new_kid.startswith(prefix) and new_kid != prefix + fingerprint[:16]:
                raise KeyStoreError(
                    f"key id {new_kid} has the reserved prefix {prefix!r} but is not derived "
                    "from this key's fingerprint",
                    key_id=new_kid,
                )
        env = self._env.get(new_kid)
        if env is not None and env.record.fingerprint != fingerprint:
            raise KeyStoreError(f"key id {new_kid} is bound to another key", key_id=new_kid)

        def change(records: dict[str, KeyRecord]) -> tuple[list[KeyRecord], str]:
            existing = records.get(new_kid)
            if existing is not None:
                if existing.fingerprint != fingerprint or existing.alg != ED25519:
                    raise KeyStoreError(
                        f"key id {new_kid} is already bound to another key in this store",
                        key_id=new_kid,
                        hint="two different keys claim the same id: find out which is genuine",
                    )
                if existing.status in (KeyStatus.REVOKED, KeyStatus.DESTROYED):
                    raise KeyStoreError(
                        f"key {new_kid} is {existing.status.value} in this store; "
                        "refusing to trust it again",
                        key_id=new_kid,
                    )
                return list(records.values()), new_kid
            atomic_write(
                self._public_dir / f"{new_kid}.pub.pem", _public_pem(public), mode=PUBLIC_FILE_MODE
            )
            record = KeyRecord(
                kid=new_kid,
                alg=ED25519,
                status=KeyStatus.VERIFY_ONLY,
                created_at=bundle.created_at or self.clock(),
                not_after=bundle.not_after,
                fingerprint=fingerprint,
                has_private=False,
                origin="imported-public",
                revoked_reason=None,
                passphrase_env=None,
            )
            return [*records.values(), record], new_kid

        return self._mutate(change)

    # -- environment keys -------------------------------------------------------------------------

    def load_env_key(self, var: str) -> str:
        """Load a key from the environment variable ``var`` into memory (never written).

        The variable holds an Ed25519 PKCS#8 PEM private key (this process then signs with it:
        it takes precedence over the store's primary for ``signer()``), an Ed25519 public key
        PEM (verify-only, for readers) or a base64 HMAC-SHA256 secret of >= 32 bytes (signs and
        verifies). The kid is ``"env-"`` + the first 16 hex digits of the key's fingerprint, so
        a writer's private PEM and a reader's public PEM get the same kid."""
        _check_env_name(var)
        value = os.environ.get(var)
        if value is None or not value.strip():
            raise KeyStoreError(
                f"the environment variable {var} is not set or empty",
                hint=f"export {var} with a key (an ed25519 PEM or a base64 HMAC secret)",
            )
        data = value.strip().encode("utf-8", "replace")
        if len(data) > MAX_KEY_FILE_BYTES:
            raise WeakKeyError(f"the environment variable {var} is too large to be a key")
        secret: bytes | None = None
        public: Ed25519PublicKey | None = None
        private: Ed25519PrivateKey | None = None
        if b"-----BEGIN" in data:
            private, public = _load_env_pem(data, var)
            alg = ED25519
            fingerprint = _ed25519_fingerprint(public)
        else:
            try:
                secret = _decode_b64_secret(data)
            except (ValueError, binascii.Error):
                raise WeakKeyError(
                    f"the environment variable {var} holds neither a PEM key nor base64",
                    hint="put an ed25519 PEM or `base64` of >= 32 random bytes in it",
                ) from None
            _check_hmac_secret(secret, key_id=None, where=f"${var}")
            alg = HMAC_SHA256
            fingerprint = _hmac_fingerprint(secret)
        kid = DERIVED_KID_PREFIXES["env"] + fingerprint[:16]
        can_sign = secret is not None or private is not None
        signer: SigningKey | None = None
        if secret is not None:
            signer = _HmacSigner(kid, secret)
        elif private is not None:
            signer = _Ed25519Signer(kid, private)
        record = KeyRecord(
            kid=kid,
            alg=alg,
            status=KeyStatus.PRIMARY if can_sign else KeyStatus.VERIFY_ONLY,
            created_at=self.clock(),
            not_after=None,
            fingerprint=fingerprint,
            has_private=can_sign,
            origin="env",
            revoked_reason=None,
            passphrase_env=None,
        )
        with self._mutex:
            if can_sign:
                old = self._env_primary
                if old is not None and old != kid:
                    prev = self._env[old]
                    self._env[old] = replace(
                        prev, record=replace(prev.record, status=KeyStatus.VERIFY_ONLY)
                    )
                self._env_primary = kid
            self._env[kid] = _EnvKey(record=record, signer=signer, secret=secret, public=public)
        return kid

    # -- key material -----------------------------------------------------------------------------

    def _key_file(self, record: KeyRecord) -> str:
        """The private key file of a (validated) kid, as a cached string (hot path)."""
        key = (record.kid, record.alg)
        path = self._paths.get(key)
        if path is None:
            name = f"{record.kid}.pem" if record.alg == ED25519 else f"{record.kid}.hmac"
            path = self._paths[key] = str(self._private_dir / name)
        return path

    def _public_file(self, kid: str) -> str:
        key = (kid, "public")
        path = self._paths.get(key)
        if path is None:
            path = self._paths[key] = str(self._public_dir / f"{kid}.pub.pem")
        return path

    def _stat_private(self, path: str, kid: str) -> tuple[int, ...]:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise KeyStoreError(
                f"the private key file {path} is missing",
                key_id=kid,
                hint="restore it from a backup, or revoke the key and rotate",
            ) from None
        if st.st_mode & 0o077 or not stat.S_ISREG(st.st_mode):
            check_private_mode(Path(path))  # KeyPermissionError with the chmod that fixes it
            raise KeyStoreError(f"{path} is not a regular file", key_id=kid)
        return _file_sig(st)

    def _read_private(self, path: str, kid: str) -> bytes:
        if not self._dirs_checked:
            self._check_private_dirs()
        check_private_mode(Path(path))
        with open_no_follow(path) as fh:
            if os.fstat(fh.fileno()).st_mode & 0o077:
                check_private_mode(Path(path))
            data = fh.read(MAX_KEY_FILE_BYTES + 1)
        if len(data) > MAX_KEY_FILE_BYTES:
            raise WeakKeyError(f"{path} is too large to be a key file", key_id=kid)
        return data

    def _check_fingerprint(self, record: KeyRecord, actual: str, path: str) -> None:
        if not hmac.compare_digest(actual, record.fingerprint):
            raise KeyStoreError(
                f"{path} does not hold the key recorded for {record.kid} (fingerprint mismatch)",
                key_id=record.kid,
                hint="a key file was replaced; restore it from a backup or revoke the key",
            )

    def _hmac_secret(self, record: KeyRecord) -> bytes:
        env = self._env.get(record.kid)
        if record.origin == "env" and env is not None and env.secret is not None:
            return env.secret
        path = self._key_file(record)
        sig = self._stat_private(path, record.kid)
        hit = self._secrets.get(record.kid)
        if hit is not None and hit[0] == sig:
            return hit[1]
        data = self._read_private(path, record.kid)
        try:
            secret = _decode_b64_secret(data)
        except (ValueError, binascii.Error):
            raise WeakKeyError(f"{path} is not base64", key_id=record.kid) from None
        _check_hmac_secret(secret, key_id=record.kid, where=str(path))
        self._check_fingerprint(record, _hmac_fingerprint(secret), path)
        with self._mutex:
            self._secrets[record.kid] = (sig, secret)
        return secret

    def _private_key(self, record: KeyRecord) -> Ed25519PrivateKey:
        path = self._key_file(record)
        data = self._read_private(path, record.kid)
        password = (
            self._passphrase(record.passphrase_env, record.kid) if record.passphrase_env else None
        )
        try:
            key = serialization.load_pem_private_key(data, password=password)
        except TypeError:
            raise KeyStoreError(
                f"{path} is passphrase-encrypted but the record names no passphrase variable",
                key_id=record.kid,
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            what = "wrong passphrase in $" + record.passphrase_env if password else "unreadable"
            raise KeyStoreError(
                f"cannot load the private key {path}: {what}",
                key_id=record.kid,
                hint="check the passphrase variable, or restore the file from a backup",
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyStoreError(f"{path} is not an ed25519 key", key_id=record.kid)
        self._check_fingerprint(record, _ed25519_fingerprint(key.public_key()), path)
        return key

    def _public_key(self, record: KeyRecord) -> Ed25519PublicKey:
        env = self._env.get(record.kid)
        if record.origin == "env" and env is not None and env.public is not None:
            return env.public
        path = self._public_file(record.kid)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise KeyStoreError(
                f"the public key file {path} is missing",
                key_id=record.kid,
                hint="restore it, or import the key again with `keys import-public`",
            ) from None
        sig = _file_sig(st)
        hit = self._publics.get(record.kid)
        if hit is not None and hit[0] == sig:
            return hit[1]
        with open_no_follow(path) as fh:
            data = fh.read(MAX_KEY_FILE_BYTES + 1)
        try:
            key = serialization.load_pem_public_key(data[:MAX_KEY_FILE_BYTES])
        except (ValueError, UnsupportedAlgorithm):
            raise KeyStoreError(f"{path} is not a PEM public key", key_id=record.kid) from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyStoreError(f"{path} is not an ed25519 public key", key_id=record.kid)
        self._check_fingerprint(record, _ed25519_fingerprint(key), path)
        with self._mutex:
            self._publics[record.kid] = (sig, key)
        return key

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
        now = self.clock()
        if not record.can_sign(now):
            if record.status is not KeyStatus.PRIMARY:
                why = f"it is {record.status.value} (only the primary signs)"
            elif not record.has_private:
                why = "it has no private material"
            else:
                assert record.not_after is not None
                why = f"it expired at {_fmt_time(record.not_after)}"
            raise NoSigningKeyError(f"key {record.kid} cannot sign: {why}", key_id=record.kid)
        if record.origin == "env":
            stored = self._current().records.get(record.kid)
            if stored is not None and stored.status in (KeyStatus.REVOKED, KeyStatus.DESTROYED):
                raise NoSigningKeyError(
                    f"key {record.kid} from the environment is {stored.status.value} in the key "
                    f"store at {self.path}",
                    key_id=record.kid,
                    hint="put a new key in the environment variable",
                )
            env = self._env[record.kid]
            assert env.signer is not None
            return env.signer
        path = self._key_file(record)
        sig = self._stat_private(path, record.kid)
        hit = self._signers.get(record.kid)
        if hit is not None and hit[0] == sig:
            return hit[1]
        signer: SigningKey
        if record.alg == ED25519:
            signer = _Ed25519Signer(record.kid, self._private_key(record))
        else:
            signer = _HmacSigner(record.kid, self._hmac_secret(record))
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
        ``signed_at`` is read as UTC."""
        check_kid(kid, artifact=artifact)
        record = self._lookup(kid)
        if record is None:
            raise UnknownKeyError(
                f"the key store at {self.path} holds no key {kid}", artifact=artifact, key_id=kid
            )
        if not isinstance(alg, str) or alg not in ALGORITHMS or alg != record.alg:
            raise AlgorithmMismatchError(
                f"the envelope names algorithm {safe_kid(alg)} but key {kid} is bound to "
                f"{record.alg}",
                artifact=artifact,
                key_id=kid,
            )
        if not isinstance(signed_at, datetime):
            raise KeyStoreError(
                f"signed_at must be a datetime, not {type(signed_at).__name__}",
                artifact=artifact,
                key_id=kid,
                hint="parse the envelope's signed_at before calling verify",
            )
        if record.status in (KeyStatus.REVOKED, KeyStatus.DESTROYED):
            why = f": {record.revoked_reason}" if record.revoked_reason else ""
            raise RevokedKeyError(
                f"key {kid} is {record.status.value}{why}", artifact=artifact, key_id=kid
            )
        if record.not_after is not None:
            signed = _aware(signed_at)
            if signed > record.not_after:
                raise ExpiredKeyError(
                    f"signed at {_fmt_time(signed)}, after key {kid} expired at "
                    f"{_fmt_time(record.not_after)}",
                    artifact=artifact,
                    key_id=kid,
                )
            if record.status is KeyStatus.VERIFY_ONLY and self.clock() > record.not_after:
                raise ExpiredKeyError(
                    f"key {kid} is retired and its grace period ended at "
                    f"{_fmt_time(record.not_after)}; it verifies nothing any more",
                    artifact=artifact,
                    key_id=kid,
                )
        if (
            not isinstance(signature, bytes | bytearray | memoryview)
            or len(signature) != SIGNATURE_LENGTH[record.alg]
        ):
            raise TamperedPayloadError(
                f"the signature is not {SIGNATURE_LENGTH[record.alg]} bytes of {record.alg}",
                artifact=artifact,
                key_id=kid,
            )
        if record.alg == ED25519:
            try:
                self._public_key(record).verify(bytes(signature), bytes(message))
            except InvalidSignature:
                raise TamperedPayloadError(
                    "the ed25519 signature does not match", artifact=artifact, key_id=kid
                ) from None
        else:
            expected = hmac.digest(self._hmac_secret(record), message, "sha256")
            if not hmac.compare_digest(expected, bytes(signature)):
                raise TamperedPayloadError(
                    "the HMAC-SHA256 signature does not match", artifact=artifact, key_id=kid
                )
        return record

    # -- ledger -----------------------------------------------------------------------------------

    @property
    def ledger(self) -> Ledger:
        """The digest ledger (``ledger.sqlite3`` in this folder), opened on first use."""
        ledger = self._ledger
        if ledger is None:
            from .ledger import Ledger

            with self._mutex:
                if self._ledger is None:
                    self._ledger = Ledger(self.path / LEDGER_FILE)
                ledger = self._ledger
        return ledger


# --- public key bundles and env PEMs -------------------------------------------------------------


@dataclass(frozen=True)
class _Bundle:
    public: Ed25519PublicKey
    kid: str | None
    created_at: datetime | None
    not_after: datetime | None
    fingerprint: str | None


_BUNDLE_FIELDS = ("kid", "alg", "created_at", "not_after", "fingerprint")


def _parse_bundle(pem: bytes) -> _Bundle:
    if isinstance(pem, str):
        pem = pem.encode("utf-8")
    if not isinstance(pem, bytes | bytearray):
        raise KeyStoreError("import_public takes the bytes of a PEM file")
    if len(pem) > MAX_KEY_FILE_BYTES:
        raise KeyStoreError(f"the public key file is larger than {MAX_KEY_FILE_BYTES} bytes")
    try:
        text = bytes(pem).decode("ascii")
    except UnicodeDecodeError:
        raise KeyStoreError("the public key file is not ASCII text") from None
    if "PRIVATE KEY-----" in text:
        raise KeyStoreError(
            "this is a private key; only public keys are imported",
            hint="export the public half on the writer: "
            "`dagster-wandb-secure keys export-public KID`",
        )
    begin = text.find("-----BEGIN PUBLIC KEY-----")
    end_marker = "-----END PUBLIC KEY-----"
    end = text.find(end_marker)
    if begin < 0 or end < begin or text.count("-----BEGIN") != 1:
        raise KeyStoreError(
            "not a single PEM public key (-----BEGIN PUBLIC KEY----- ... -----END PUBLIC KEY-----)"
        )
    if text[end + len(end_marker) :].strip():
        raise KeyStoreError("unexpected text after the PEM public key")
    fields: dict[str, str] = {}
    header = [line for line in text[:begin].splitlines() if line.strip()]
    if header:
        if header[0].strip() != BUNDLE_TITLE:
            raise KeyStoreError(
                "unrecognized text before the PEM public key",
                hint="pass a file written by `keys export-public`, or a bare PEM public key",
            )
        for line in header[1:]:
            match = re.fullmatch(r"# ([a-z_]+): (\S{1,128})", line.strip())
            if not match or match.group(1) not in _BUNDLE_FIELDS:
                raise KeyStoreError(f"malformed bundle line {line[:80]!r}")
            name, value = match.groups()
            if name in fields:
                raise KeyStoreError(f"bundle field {name} appears twice")
            fields[name] = value
        missing = [f for f in _BUNDLE_FIELDS if f not in fields]
        if missing:
            raise KeyStoreError(f"the bundle lacks {', '.join(missing)}")
        if fields["alg"] != ED25519:
            raise AlgorithmMismatchError(
                f"the bundle names algorithm {safe_kid(fields['alg'])}; only ed25519 public "
                "keys can be imported",
                key_id=safe_kid(fields["kid"]),
            )
        check_kid(fields["kid"])
    try:
        public = serialization.load_pem_public_key(text[begin:].encode("ascii"))
    except (ValueError, UnsupportedAlgorithm):
        raise KeyStoreError("the PEM public key cannot be parsed") from None
    if not isinstance(public, Ed25519PublicKey):
        raise AlgorithmMismatchError(
            f"the public key is {type(public).__name__}, not ed25519",
            hint="only ed25519 public keys can be imported",
        )
    try:
        created_at = _parse_time(fields["created_at"], "created_at") if header else None
        not_after = (
            _parse_time(fields["not_after"], "not_after")
            if header and fields["not_after"] != "none"
            else None
        )
    except ValueError as exc:
        raise KeyStoreError(f"malformed bundle timestamp: {exc}") from None
    fingerprint = None
    if header:
        fp = fields["fingerprint"]
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", fp):
            raise KeyStoreError("malformed bundle fingerprint (want sha256:<64 hex digits>)")
        fingerprint = fp.removeprefix("sha256:")
    return _Bundle(
        public=public,
        kid=fields.get("kid"),
        created_at=created_at,
        not_after=not_after,
        fingerprint=fingerprint,
    )


def _load_env_pem(data: bytes, var: str) -> tuple[Ed25519PrivateKey | None, Ed25519PublicKey]:
    if b"PRIVATE KEY-----" in data:
        if b"ENCRYPTED PRIVATE KEY" in data:
            raise KeyStoreError(
                f"the PEM key in ${var} is passphrase-encrypted",
                hint="an environment key must be an unencrypted PKCS#8 PEM (the secret manager "
                "that sets the variable protects it)",
            )
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise KeyStoreError(f"the PEM private key in ${var} cannot be parsed") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise AlgorithmMismatchError(
                f"the private key in ${var} is {type(key).__name__}, not ed25519",
                hint="generate an ed25519 key",
            )
        return key, key.public_key()
    try:
        public = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyStoreError(f"the PEM public key in ${var} cannot be parsed") from None
    if not isinstance(public, Ed25519PublicKey):
        raise AlgorithmMismatchError(
            f"the public key in ${var} is {type(public).__name__}, not ed25519",
            hint="use an ed25519 key",
        )
    return None, public
