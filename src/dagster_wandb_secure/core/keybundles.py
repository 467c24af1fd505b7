"""Keys that travel outside a key store: public key bundles (export/import) and environment keys.

A bundle is comment lines naming the key (``BUNDLE_TITLE``, then ``# kid:``, ``# alg:``,
``# created_at:``, ``# not_after:``, ``# fingerprint: sha256:<hex>``, ``# status:``) followed by
the public key PEM; OpenSSL reads it as a plain PEM. ``status`` (``verify-only`` or ``revoked``;
absent in bundles of older versions, read as ``verify-only``) and ``not_after`` travel with the
key: an import takes them, and importing a key again may only end it, never revive it. An environment key is a variable holding a key of one of
the algorithms (``core/algorithms.py`` says which values each one claims); it lives only in the
memory of the process. Keys without a writer-chosen id get a kid derived from their fingerprint.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from .algorithms import PUBLIC_KEY_ALGORITHMS, REGISTRY, SigningKey, algorithm
from .errors import AlgorithmMismatchError, KeyStoreError, WeakKeyError
from .keyfiles import MAX_KEY_FILE_BYTES
from .keyrecords import (
    DEAD_STATUSES,
    DERIVED_KID_PREFIXES,
    KeyRecord,
    KeyStatus,
    check_env_name,
    check_kid,
    derived_kid,
    fmt_time,
    parse_time,
    safe_kid,
)

__all__ = [
    "BUNDLE_TITLE",
    "DERIVED_KID_PREFIXES",
    "Bundle",
    "EnvKey",
    "bundle_kid",
    "check_reimport",
    "env_key",
    "imported_record",
    "parse_bundle",
    "render_bundle",
]

BUNDLE_TITLE = "# dagster-wandb-secure public key v1"
_BUNDLE_FIELDS = ("kid", "alg", "created_at", "not_after", "fingerprint")
_OPTIONAL_FIELDS = ("status",)
_BUNDLE_STATUSES = (KeyStatus.VERIFY_ONLY.value, KeyStatus.REVOKED.value)
REVOKED_BY_BUNDLE = "revoked in the key store that exported it"
_PUBLIC_NAMES = " or ".join(PUBLIC_KEY_ALGORITHMS)


# --- public key bundles --------------------------------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    alg: str
    public: Any
    kid: str | None
    created_at: datetime | None
    not_after: datetime | None
    fingerprint: str | None
    status: KeyStatus = KeyStatus.VERIFY_ONLY


def render_bundle(record: KeyRecord, public: Any) -> bytes:
    """The bundle ``export_public`` writes for ``record`` and its loaded public key."""
    lines = [
        BUNDLE_TITLE,
        f"# kid: {record.kid}",
        f"# alg: {record.alg}",
        f"# created_at: {fmt_time(record.created_at)}",
        f"# not_after: {fmt_time(record.not_after) if record.not_after else 'none'}",
        f"# fingerprint: sha256:{record.fingerprint}",
        f"# status: {_BUNDLE_STATUSES[record.status in DEAD_STATUSES]}",
    ]
    return ("\n".join(lines) + "\n").encode("ascii") + algorithm(record.alg).serialize_public(
        public
    )


def parse_bundle(pem: bytes) -> Bundle:
    """Parse a bundle or a bare PEM public key (``KeyStoreError`` / ``AlgorithmMismatchError``)."""
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
            if not match or match.group(1) not in (*_BUNDLE_FIELDS, *_OPTIONAL_FIELDS):
                raise KeyStoreError(f"malformed bundle line {line[:80]!r}")
            name, value = match.groups()
            if name in fields:
                raise KeyStoreError(f"bundle field {name} appears twice")
            fields[name] = value
        missing = [f for f in _BUNDLE_FIELDS if f not in fields]
        if missing:
            raise KeyStoreError(f"the bundle lacks {', '.join(missing)}")
        if fields["alg"] not in PUBLIC_KEY_ALGORITHMS:
            raise AlgorithmMismatchError(
                f"the bundle names algorithm {safe_kid(fields['alg'])}; only {_PUBLIC_NAMES} "
                "public keys can be imported",
                key_id=safe_kid(fields["kid"]),
            )
        check_kid(fields["kid"])
        if fields.get("status", _BUNDLE_STATUSES[0]) not in _BUNDLE_STATUSES:
            raise KeyStoreError(
                f"unknown bundle status {safe_kid(fields['status'])} "
                f"(want {' or '.join(_BUNDLE_STATUSES)})"
            )
    try:
        public = serialization.load_pem_public_key(text[begin:].encode("ascii"))
    except (ValueError, UnsupportedAlgorithm):
        raise KeyStoreError("the PEM public key cannot be parsed") from None
    candidates = [fields["alg"]] if header else list(PUBLIC_KEY_ALGORITHMS)
    alg = next((name for name in candidates if algorithm(name).accepts_public(public)), None)
    if alg is None:
        raise AlgorithmMismatchError(
            f"the public key is {type(public).__name__}, not {' or '.join(candidates)}",
            hint=f"only {_PUBLIC_NAMES} public keys can be imported",
        )
    try:
        created_at = parse_time(fields["created_at"], "created_at") if header else None
        not_after = (
            parse_time(fields["not_after"], "not_after")
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
    return Bundle(
        alg=alg,
        public=public,
        kid=fields.get("kid"),
        created_at=created_at,
        not_after=not_after,
        fingerprint=fingerprint,
        status=KeyStatus(fields.get("status", _BUNDLE_STATUSES[0])),
    )


def bundle_kid(bundle: Bundle, fingerprint: str, kid: str | None) -> str:
    """The key id an imported bundle gets: the bundle's, else ``kid``, else derived.

    Refuses a bundle whose fingerprint line does not match its key, a ``kid`` contradicting
    the bundle's, and a reserved (derived) prefix on an id not derived from this key."""
    if bundle.fingerprint is not None and not hmac.compare_digest(bundle.fingerprint, fingerprint):
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
        new_kid = derived_kid("pub", fingerprint)
    check_kid(new_kid)
    for prefix in filter(None, DERIVED_KID_PREFIXES.values()):
        if new_kid.startswith(prefix) and new_kid != prefix + fingerprint[:16]:
            raise KeyStoreError(
                f"key id {new_kid} has the reserved prefix {prefix!r} but is not derived "
                "from this key's fingerprint",
                key_id=new_kid,
            )
    return new_kid


def check_reimport(existing: KeyRecord, bundle: Bundle, fingerprint: str) -> KeyRecord:
    """Importing a key whose id the store already holds: the same key only, and the result may
    only end it (the earlier end date wins, a revocation is taken), never revive it."""
    if existing.fingerprint != fingerprint or existing.alg != bundle.alg:
        raise KeyStoreError(
            f"key id {existing.kid} is already bound to another key in this store",
            key_id=existing.kid,
            hint="two different keys claim the same id: find out which is genuine",
        )
    if existing.status in DEAD_STATUSES:
        if bundle.status in DEAD_STATUSES:
            return existing
        raise KeyStoreError(
            f"key {existing.kid} is {existing.status.value} in this store; "
            "refusing to trust it again",
            key_id=existing.kid,
        )
    merged = existing
    if bundle.not_after is not None and (
        merged.not_after is None or bundle.not_after < merged.not_after
    ):
        merged = replace(merged, not_after=bundle.not_after)
    if bundle.status in DEAD_STATUSES:
        merged = replace(merged, status=KeyStatus.REVOKED, revoked_reason=REVOKED_BY_BUNDLE)
    return merged


def imported_record(bundle: Bundle, kid: str, fingerprint: str, created_at: datetime) -> KeyRecord:
    """The record of an imported public key: verify-only, or revoked if the bundle says so."""
    dead = bundle.status in DEAD_STATUSES
    return KeyRecord(
        kid=kid,
        alg=bundle.alg,
        status=KeyStatus.REVOKED if dead else KeyStatus.VERIFY_ONLY,
        created_at=created_at,
        not_after=bundle.not_after,
        fingerprint=fingerprint,
        has_private=False,
        origin="imported-public",
        revoked_reason=REVOKED_BY_BUNDLE if dead else None,
        passphrase_env=None,
    )


# --- environment keys ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvKey:
    """A key loaded from an environment variable: its in-memory record, signer, verify key."""

    record: KeyRecord
    signer: SigningKey | None
    verify_key: Any


def env_key(var: str, clock: Callable[[], datetime]) -> EnvKey:
    """Load the key in the environment variable ``var`` (see ``KeyStore.load_env_key``)."""
    check_env_name(var)
    value = os.environ.get(var)
    if value is None or not value.strip():
        raise KeyStoreError(
            f"the environment variable {var} is not set or empty",
            hint=f"export {var} with a key (an {_PUBLIC_NAMES} PEM or a base64 HMAC secret)",
        )
    data = value.strip().encode("utf-8", "replace")
    if len(data) > MAX_KEY_FILE_BYTES:
        raise WeakKeyError(f"the environment variable {var} is too large to be a key")
    alg, algo = next((n, c) for n, c in REGISTRY.items() if c.claims_env_value(data))
    private, verify_key = algo.load_env(data, var)
    fingerprint = algo.fingerprint(verify_key)
    kid = derived_kid("env", fingerprint)
    can_sign = private is not None
    record = KeyRecord(
        kid=kid,
        alg=alg,
        status=KeyStatus.PRIMARY if can_sign else KeyStatus.VERIFY_ONLY,
        created_at=clock(),
        not_after=None,
        fingerprint=fingerprint,
        has_private=can_sign,
        origin="env",
        revoked_reason=None,
        passphrase_env=None,
    )
    signer = algo.signer(kid, private) if private is not None else None
    return EnvKey(record=record, signer=signer, verify_key=verify_key)
