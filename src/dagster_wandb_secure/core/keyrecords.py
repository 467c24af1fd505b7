"""Key records: ``KeyStatus``, ``KeyRecord``, key id rules and the ``keystore.json`` format.

``keystore.json`` is ``{"format": STORE_FORMAT, "version": 1, "keys": [record, ...]}``; every
record has exactly the fields of ``KeyRecord.to_json``. Parsing is strict (no duplicate keys, no
unknown fields, at most one primary) and a file that breaks a rule is ``KeyStoreError`` "corrupt".
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from .algorithms import ALGORITHMS, PUBLIC_KEY_ALGORITHMS, algorithm
from .canonical import reject_duplicate_keys
from .errors import (
    ExpiredKeyError,
    KeyPermissionError,
    KeyStoreError,
    MalformedEnvelopeError,
    RevokedKeyError,
    UnknownKeyError,
)
from .fsutil import check_owner

__all__ = [
    "DEAD_STATUSES",
    "DERIVED_KID_PREFIXES",
    "ENV_NAME_RE",
    "MAX_CLOCK_SKEW",
    "KID_RE",
    "ORIGINS",
    "ORIGINS_STORED",
    "STORE_FORMAT",
    "STORE_VERSION",
    "KeyRecord",
    "KeyStatus",
    "aware",
    "check_env_name",
    "check_grace",
    "check_kid",
    "check_promotable",
    "check_verifiable",
    "derived_kid",
    "dump_store",
    "end_date",
    "expiry",
    "kid_fingerprint",
    "match_fingerprint",
    "file_sig",
    "fmt_time",
    "now",
    "parse_store",
    "parse_time",
    "read_store_file",
    "safe_kid",
    "signing_refusal",
    "strictest",
    "unknown_key",
]

KID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
# One key id derivation for every key: the first 16 hex digits of its fingerprint, after a prefix
# naming where it came from ("" generated in a key store, "env-" from an environment variable,
# "pub-" a bare public key import). Key ids of this shape carry the fingerprint the writer used,
# so a reader matches by fingerprint whatever the prefix (``KeyStore.verify``).
DERIVED_KID_PREFIXES = {"generated": "", "env": "env-", "pub": "pub-"}
_DERIVED_KID_RE = re.compile(r"(?:env-|pub-)?([0-9a-f]{16})")
# How far in the future an envelope's signed_at may lie (clocks of writer and reader differ).
MAX_CLOCK_SKEW = timedelta(minutes=5)
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")

STORE_FORMAT = "dagster-wandb-secure/keystore"
STORE_VERSION = 1
MAX_KEYSTORE_BYTES = 16 * 1024 * 1024

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


DEAD_STATUSES = (KeyStatus.REVOKED, KeyStatus.DESTROYED)  # they verify nothing, ever again


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
            "created_at": fmt_time(self.created_at),
            "not_after": fmt_time(self.not_after) if self.not_after else None,
            "fingerprint": self.fingerprint,
            "has_private": self.has_private,
            "origin": self.origin,
            "revoked_reason": self.revoked_reason,
            "passphrase_env": self.passphrase_env,
        }


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


def derived_kid(origin: str, fingerprint: str) -> str:
    """The key id of a key with ``fingerprint`` from ``origin`` (see ``DERIVED_KID_PREFIXES``)."""
    return DERIVED_KID_PREFIXES[origin] + fingerprint[:16]


def kid_fingerprint(kid: str) -> str | None:
    """The fingerprint prefix (16 hex digits) a derived key id carries, or None."""
    match = _DERIVED_KID_RE.fullmatch(kid)
    return match.group(1) if match else None


def now() -> datetime:
    return datetime.now(UTC)


def fmt_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def aware(value: datetime) -> datetime:
    """Timestamps are UTC; a naive datetime is read as UTC (the envelope writes UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def parse_time(value: object, what: str) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError(f"{what} is not a timestamp string")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"{what} {value!r} has no time zone")
    return parsed.astimezone(UTC)


def check_env_name(name: object, *, what: str = "environment variable name") -> str:
    if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
        raise KeyStoreError(
            f"invalid {what} {safe_kid(name)}: use letters, digits and '_'",
            hint="pass the NAME of an environment variable, never its value",
        )
    return name


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def record_from_json(obj: object) -> KeyRecord:
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
    created_at = parse_time(obj["created_at"], f"key {kid} created_at")
    not_after = (
        None if obj["not_after"] is None else parse_time(obj["not_after"], f"key {kid} not_after")
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
    if origin == "imported-public" and (has_private or not algorithm(alg).has_public_half()):
        raise ValueError(
            f"key {kid}: an imported public key must be "
            f"{' or '.join(PUBLIC_KEY_ALGORITHMS)} without private"
        )
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


def parse_store(raw: bytes, where: Path) -> dict[str, KeyRecord]:
    try:
        doc = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=reject_duplicate_keys,
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
            record = record_from_json(item)
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


def dump_store(records: Iterable[KeyRecord]) -> bytes:
    doc = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "keys": [r.to_json() for r in records],
    }
    return (json.dumps(doc, indent=2, ensure_ascii=True, allow_nan=False) + "\n").encode()


def file_sig(st: os.stat_result) -> tuple[int, ...]:
    # inlined, the same tuple, in KeyStore._current and KeyFiles.stat_private: change all three
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_store_file(file: Path, *, pin: bool = False) -> tuple[bytes, os.stat_result, int | None]:
    """Read keystore.json (no symlinks, bounded); with ``pin`` keep its descriptor open
    and return it."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(file, flags)
    except FileNotFoundError:
        raise KeyStoreError(
            f"{file} is missing",
            hint="restore it from a backup, or open the folder as a new key store",
        ) from None
    except OSError as exc:
        raise KeyStoreError(
            f"cannot open {file}: {exc.strerror}",
            hint=f"{file.name} must be a regular file, not a symlink",
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyStoreError(f"{file} is not a regular file")
        if st.st_mode & 0o022:
            raise KeyPermissionError(
                f"{file} has mode {stat.S_IMODE(st.st_mode):o}, writable by group or others",
                hint=f"run: chmod 644 {file}",
            )
        check_owner(file, st, what="key store file")
        if st.st_size > MAX_KEYSTORE_BYTES:
            raise KeyStoreError(f"{file} is larger than {MAX_KEYSTORE_BYTES} bytes")
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
            raise KeyStoreError(f"{file} is larger than {MAX_KEYSTORE_BYTES} bytes")
    except BaseException:
        os.close(fd)
        raise
    if pin:
        return raw, st, fd
    os.close(fd)
    return raw, st, None


# --- what a record permits -----------------------------------------------------------------------


def signing_refusal(record: KeyRecord, now: datetime) -> str | None:
    """Why ``record`` cannot sign at ``now`` (None when it can)."""
    if record.can_sign(now):
        return None
    if record.status is not KeyStatus.PRIMARY:
        return f"it is {record.status.value} (only the primary signs)"
    if not record.has_private:
        return "it has no private material"
    assert record.not_after is not None
    return f"it expired at {fmt_time(record.not_after)}"


def check_verifiable(
    record: KeyRecord,
    signed_at: datetime,
    clock: Callable[[], datetime],
    *,
    artifact: str | None,
) -> None:
    """``RevokedKeyError`` / ``ExpiredKeyError`` / ``MalformedEnvelopeError`` unless ``record``
    may verify a signature that claims to be made at ``signed_at`` (naive is read as UTC).

    The model (SECURITY.md, "Key end dates"): ``signed_at`` is written by whoever holds the key,
    so it proves nothing about when a signature was made. Once a key's not-after has passed it
    verifies nothing at all, whatever ``signed_at`` says, primary and verify-only alike; artifacts
    that must outlive a key are re-signed (``resign``) before its end. A ``signed_at`` after the
    key's end, or further in the future than ``MAX_CLOCK_SKEW``, is refused too."""
    if not isinstance(signed_at, datetime):
        raise KeyStoreError(
            f"signed_at must be a datetime, not {type(signed_at).__name__}",
            artifact=artifact,
            key_id=record.kid,
            hint="parse the envelope's signed_at before calling verify",
        )
    if record.status in (KeyStatus.REVOKED, KeyStatus.DESTROYED):
        why = f": {record.revoked_reason}" if record.revoked_reason else ""
        raise RevokedKeyError(
            f"key {record.kid} is {record.status.value}{why}", artifact=artifact, key_id=record.kid
        )
    current = clock()
    signed = aware(signed_at)
    if record.not_after is not None:
        # LEDGER-ATTESTED HOOK (not built): once the shared ledger lands, a version whose digest
        # that ledger recorded while this key was valid may be accepted after the key's end. It
        # must be decided by the caller from the ledger's record, never from ``signed_at``; until
        # then an ended key verifies nothing.
        if current > record.not_after:
            raise ExpiredKeyError(
                f"key {record.kid} ended at {fmt_time(record.not_after)}; it verifies nothing "
                "any more, whatever the envelope's signed_at says",
                artifact=artifact,
                key_id=record.kid,
                hint="re-sign artifacts that must outlive a key (`dagster-wandb-secure resign "
                "--from KID`) before its end date, or re-materialize the asset",
            )
        if signed > record.not_after:
            raise ExpiredKeyError(
                f"signed at {fmt_time(signed)}, after key {record.kid} expired at "
                f"{fmt_time(record.not_after)}",
                artifact=artifact,
                key_id=record.kid,
            )
    if signed > current + MAX_CLOCK_SKEW:
        raise MalformedEnvelopeError(
            f"signed_at {fmt_time(signed)} lies in the future (more than "
            f"{int(MAX_CLOCK_SKEW.total_seconds())} s after this machine's clock "
            f"{fmt_time(current)})",
            artifact=artifact,
            key_id=record.kid,
            hint="a future date is forged or the writer's clock is wrong; fix the clock (NTP) "
            "and re-materialize the asset",
        )


def end_date(record: KeyRecord, when: datetime) -> datetime:
    """The not-after of ``record`` ended at ``when``: never later than the one it has."""
    return when if record.not_after is None or when < record.not_after else record.not_after


def expiry(now: datetime, expires_in: timedelta | None) -> datetime | None:
    """The ``not_after`` of a key created at ``now`` that lives ``expires_in`` (None: forever)."""
    if expires_in is None:
        return None
    if not isinstance(expires_in, timedelta) or expires_in <= timedelta(0):
        raise KeyStoreError(
            f"expires_in must be a positive duration, not {expires_in!r}",
            hint="pass e.g. timedelta(days=90)",
        )
    return now + expires_in


def check_promotable(record: KeyRecord, clock: Callable[[], datetime]) -> None:
    """``KeyStoreError`` unless ``record`` may become the primary."""
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
    if record.not_after is not None and clock() > record.not_after:
        raise KeyStoreError(
            f"key {record.kid} expired at {fmt_time(record.not_after)}",
            key_id=record.kid,
            hint="rotate to a new key: `dagster-wandb-secure keys rotate`",
        )


def check_grace(grace: timedelta | None) -> None:
    """``KeyStoreError`` unless ``grace`` is None or a non-negative duration."""
    if grace is not None and (not isinstance(grace, timedelta) or grace < timedelta(0)):
        raise KeyStoreError(f"grace must be a non-negative duration, not {grace!r}")


def strictest(records: list[KeyRecord]) -> KeyRecord:
    """Of several records of one key, the one that permits least: revoked, else earliest end."""
    dead = [r for r in records if r.status in DEAD_STATUSES]
    if dead:
        return dead[0]
    return min(records, key=lambda r: (r.not_after is None, r.not_after or r.created_at))


def unknown_key(store: Path, kid: str, fp: str | None, artifact: str | None) -> UnknownKeyError:
    """The error for an envelope naming ``kid`` that the key store at ``store`` cannot match;
    ``fp`` is the fingerprint prefix the key id carries (None: it carries none)."""
    if fp is None:
        return UnknownKeyError(
            f"the key store at {store} holds no key {kid}; the envelope carries no fingerprint "
            f"(key id {kid} is not derived from one)",
            artifact=artifact,
            key_id=kid,
            hint="ask the writer which key this is (`dagster-wandb-secure keys list`), compare "
            "its fingerprint out of band and import its public key "
            f"(`dagster-wandb-secure keys import-public FILE -k {store}`)",
        )
    return UnknownKeyError(
        f"the key store at {store} holds no key {kid} and no key whose fingerprint starts with "
        f"{fp} (the fingerprint this envelope wants)",
        artifact=artifact,
        key_id=kid,
        hint=f"the writer's `keys list` shows its key's fingerprint (sha256:{fp}...); if that "
        "writer is trusted, import its public key (`dagster-wandb-secure keys import-public FILE "
        f"-k {store}`) and compare the fingerprint it prints out of band",
    )


def match_fingerprint(
    record: KeyRecord | None,
    kid: str,
    fp: str | None,
    same: list[KeyRecord],
    *,
    store: Path,
    artifact: str | None,
) -> KeyRecord:
    """The record that decides whether envelopes naming ``kid`` verify: ``record`` (the one
    stored under ``kid``, if any), else the one key whose fingerprint starts with the ``fp`` the
    key id carries; of several records of that key (``same``: every record whose fingerprint
    starts with ``fp``) the strictest decides. ``UnknownKeyError`` when nothing matches."""
    if record is None:
        if fp is None or not same:
            raise unknown_key(store, kid, fp, artifact)
        if len({r.fingerprint for r in same}) > 1:
            raise UnknownKeyError(
                f"several keys in the key store at {store} have fingerprints starting with "
                f"{fp}; refusing to guess",
                artifact=artifact,
                key_id=kid,
            )
        record = same[0]
    return strictest([r for r in same if r.fingerprint == record.fingerprint] or [record])
