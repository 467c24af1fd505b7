"""The signature algorithm table: one class per algorithm, and the registry ``ALGORITHMS`` is read from.

Each class says everything the key store, the envelope and the CLI need to know about its
algorithm: its exact name, signature size, key file suffixes, how to generate key material, how
to load and serialize it (key files, environment variables), how to sign and verify, and how its
fingerprint is derived. Adding an algorithm is one class here plus one entry in ``REGISTRY``.

The key store knows two kinds of material per key: the *private* material (what signs; stored in
``private/<kid><private_suffix>``) and the *verify key* (what verifies). For a symmetric algorithm
the verify key is the private material itself and there is no public file
(``public_suffix is None``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .errors import AlgorithmMismatchError, KeyStoreError, WeakKeyError
from .keys_memo import OWN_SIGNATURES

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHM",
    "ED25519",
    "HMAC_FINGERPRINT_TAG",
    "HMAC_KEY_PREFIX",
    "HMAC_SHA256",
    "MIN_HMAC_SECRET_BYTES",
    "PUBLIC_KEY_ALGORITHMS",
    "REGISTRY",
    "SIGNATURE_SIZES",
    "Ed25519",
    "GeneratedKey",
    "HmacSha256",
    "SignatureAlgorithm",
    "SigningKey",
    "algorithm",
    "format_hmac_key",
    "parse_hmac_key",
]

MIN_HMAC_SECRET_BYTES = 32
HMAC_SECRET_BYTES = 32
# An HMAC secret with fewer distinct byte values than this is not random (e.g. all zeros, a
# repeated character); 32 random bytes have ~30 distinct values, < 12 has odds below 1e-12.
MIN_DISTINCT_SECRET_BYTES = 12
HMAC_FINGERPRINT_TAG = b"dagster-wandb-secure/hmac-sha256-fingerprint/v1\x00"
# The project's HMAC key format: HMAC_KEY_PREFIX + unpadded URL-safe base64 of the secret followed
# by a checksum (the first HMAC_CHECKSUM_BYTES of SHA-256(HMAC_CHECKSUM_TAG + secret)). A value
# from an environment variable must be in it, so a human-chosen phrase is refused by construction.
HMAC_KEY_PREFIX = "dws-hmac-sha256-v1:"
HMAC_CHECKSUM_TAG = b"dagster-wandb-secure/hmac-key-checksum/v1\x00"
HMAC_CHECKSUM_BYTES = 4
MAX_HMAC_SECRET_BYTES = 1024


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


def _keyed_hmac(secret: bytes) -> crypto_hmac.HMAC:
    """An HMAC-SHA256 state keyed with ``secret`` (``cryptography``), to be ``copy()``-ed per
    message: the key schedule (RFC 2104 inner and outer pads) runs once per key, not per
    message, and the one-shot ``hmac.digest`` path (an OpenSSL context set up, and the GIL
    dropped, on every call) is avoided."""
    return crypto_hmac.HMAC(secret, hashes.SHA256())


class _HmacSigner(_Signer):
    __slots__ = ("_keyed",)

    def __init__(self, kid: str, alg: str, secret: bytes) -> None:
        super().__init__(kid, alg)
        self._keyed = _keyed_hmac(secret)

    def sign(self, message: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(message)
        return mac.finalize()


class _Ed25519Signer(_Signer):
    """Signs, and remembers what it signed in the process's own-signature memo
    (``keys_memo.py``) under the fingerprint of this very key's public half."""

    __slots__ = ("_key", "fingerprint")

    def __init__(self, kid: str, alg: str, key: Ed25519PrivateKey) -> None:
        super().__init__(kid, alg)
        self._key = key
        self.fingerprint = Ed25519.fingerprint(key.public_key())

    def sign(self, message: bytes) -> bytes:
        signature = self._key.sign(message)
        OWN_SIGNATURES.add(self.alg, self.kid, self.fingerprint, message, signature)
        return signature

    def made(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is exactly this key's signature of ``message``. Ed25519 signing
        is deterministic (RFC 8032 5.1.6: the nonce is a hash of the key and the message), so
        equality proves validity at the cost of a signature; False says nothing (the caller
        verifies: a signature made elsewhere, or by a hedged signer, may still be valid)."""
        return hmac.compare_digest(self._key.sign(bytes(message)), bytes(signature))


@dataclass(frozen=True)
class GeneratedKey:
    """New key material: the bytes of its private (and public) key file and its fingerprint."""

    private_file: bytes
    public_file: bytes | None
    fingerprint: str


class SignatureAlgorithm:
    """The interface every algorithm class implements (class methods only; never instantiated)."""

    name: ClassVar[str]
    signature_size: ClassVar[int]
    private_suffix: ClassVar[str]  # private/<kid><private_suffix>
    public_suffix: ClassVar[str | None]  # public/<kid><public_suffix>; None: no public half
    summary: ClassVar[str]  # a few words for the CLI's --alg help
    supports_passphrase: ClassVar[bool] = False  # can its private file be encrypted
    # whether verify() may be replaced by a proof that this process made the signature (own
    # signature memo, or re-signing with the private key held): only where verify is costly and
    # signing deterministic (SECURITY.md, "Own signatures")
    proves_own: ClassVar[bool] = False

    @classmethod
    def has_public_half(cls) -> bool:
        return cls.public_suffix is not None

    @classmethod
    def check_passphrase_allowed(cls) -> None:
        """``KeyStoreError`` if this algorithm's private file cannot be passphrase-encrypted."""

    @classmethod
    def generate(cls, passphrase: bytes | None) -> GeneratedKey:
        raise NotImplementedError

    @classmethod
    def load_private(
        cls, data: bytes, *, password: bytes | None, passphrase_env: str | None, path: str, kid: str
    ) -> Any:
        """The private material in the bytes of a private key file (``KeyStoreError`` else)."""
        raise NotImplementedError

    @classmethod
    def load_public(cls, data: bytes, *, path: str, kid: str) -> Any:
        """The verify key in the bytes of a public key file (asymmetric algorithms only)."""
        raise NotImplementedError

    @classmethod
    def accepts_public(cls, key: object) -> bool:
        """Whether a parsed PEM public key object is a key of this algorithm."""
        return False

    @classmethod
    def serialize_public(cls, verify_key: Any) -> bytes:
        """The bytes of the public key file (asymmetric algorithms only)."""
        raise NotImplementedError

    @classmethod
    def verify_key_of(cls, private: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def fingerprint(cls, verify_key: Any) -> str:
        """sha256 hex that identifies the key (stored in its record)."""
        raise NotImplementedError

    @classmethod
    def signer(cls, kid: str, private: Any) -> SigningKey:
        raise NotImplementedError

    @classmethod
    def verify(cls, verify_key: Any, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is valid; ``verify_key`` is a verify key or what
        ``prepare_verify`` made of one."""
        raise NotImplementedError

    @classmethod
    def prepare_verify(cls, verify_key: Any) -> Any:
        """Per-key state ``verify`` can reuse for every message (default: the key itself)."""
        return verify_key

    @classmethod
    def mismatch_message(cls) -> str:
        return f"the {cls.name} signature does not match"

    @classmethod
    def no_public_half(cls, kid: str) -> KeyStoreError:
        """The error for exporting the public half of a key of a symmetric algorithm."""
        raise NotImplementedError

    @classmethod
    def claims_env_value(cls, data: bytes) -> bool:
        """Whether an environment variable's (stripped) value is a key of this algorithm."""
        raise NotImplementedError

    @classmethod
    def load_env(cls, data: bytes, var: str) -> tuple[Any | None, Any]:
        """(private material or None, verify key) from an environment variable's value."""
        raise NotImplementedError


class Ed25519(SignatureAlgorithm):
    """Ed25519: PKCS#8 PEM private files (optionally passphrase-encrypted), SPKI PEM public files."""

    name = "ed25519"
    signature_size = 64
    private_suffix = ".pem"
    public_suffix = ".pub.pem"
    summary = "readers hold only public keys"
    supports_passphrase = True
    proves_own = True

    @classmethod
    def generate(cls, passphrase: bytes | None) -> GeneratedKey:
        key = Ed25519PrivateKey.generate()
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase is not None
            else serialization.NoEncryption()
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        public = key.public_key()
        return GeneratedKey(pem, cls.serialize_public(public), cls.fingerprint(public))

    @classmethod
    def load_private(
        cls, data: bytes, *, password: bytes | None, passphrase_env: str | None, path: str, kid: str
    ) -> Ed25519PrivateKey:
        try:
            key = serialization.load_pem_private_key(data, password=password)
        except TypeError:
            raise KeyStoreError(
                f"{path} is passphrase-encrypted but the record names no passphrase variable",
                key_id=kid,
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            what = "wrong passphrase in $" + str(passphrase_env) if password else "unreadable"
            raise KeyStoreError(
                f"cannot load the private key {path}: {what}",
                key_id=kid,
                hint="check the passphrase variable, or restore the file from a backup",
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyStoreError(f"{path} is not an {cls.name} key", key_id=kid)
        return key

    @classmethod
    def load_public(cls, data: bytes, *, path: str, kid: str) -> Ed25519PublicKey:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm):
            raise KeyStoreError(f"{path} is not a PEM public key", key_id=kid) from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyStoreError(f"{path} is not an {cls.name} public key", key_id=kid)
        return key

    @classmethod
    def accepts_public(cls, key: object) -> bool:
        return isinstance(key, Ed25519PublicKey)

    @classmethod
    def serialize_public(cls, verify_key: Ed25519PublicKey) -> bytes:
        return verify_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def verify_key_of(cls, private: Ed25519PrivateKey) -> Ed25519PublicKey:
        return private.public_key()

    @classmethod
    def fingerprint(cls, verify_key: Ed25519PublicKey) -> str:
        raw = verify_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return hashlib.sha256(raw).hexdigest()

    @classmethod
    def signer(cls, kid: str, private: Ed25519PrivateKey) -> SigningKey:
        return _Ed25519Signer(kid, cls.name, private)

    @classmethod
    def verify(cls, verify_key: Ed25519PublicKey, message: bytes, signature: bytes) -> bool:
        try:
            verify_key.verify(bytes(signature), bytes(message))
        except InvalidSignature:
            return False
        return True

    @classmethod
    def claims_env_value(cls, data: bytes) -> bool:
        return b"-----BEGIN" in data

    @classmethod
    def load_env(cls, data: bytes, var: str) -> tuple[Ed25519PrivateKey | None, Ed25519PublicKey]:
        if b"PRIVATE KEY-----" in data:
            if b"ENCRYPTED PRIVATE KEY" in data:
                raise KeyStoreError(
                    f"the PEM key in ${var} is passphrase-encrypted",
                    hint="an environment key must be an unencrypted PKCS#8 PEM (the secret "
                    "manager that sets the variable protects it)",
                )
            try:
                key = serialization.load_pem_private_key(data, password=None)
            except (ValueError, TypeError, UnsupportedAlgorithm):
                raise KeyStoreError(f"the PEM private key in ${var} cannot be parsed") from None
            if not isinstance(key, Ed25519PrivateKey):
                raise AlgorithmMismatchError(
                    f"the private key in ${var} is {type(key).__name__}, not {cls.name}",
                    hint=f"generate an {cls.name} key",
                )
            return key, key.public_key()
        try:
            public = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm):
            raise KeyStoreError(f"the PEM public key in ${var} cannot be parsed") from None
        if not isinstance(public, Ed25519PublicKey):
            raise AlgorithmMismatchError(
                f"the public key in ${var} is {type(public).__name__}, not {cls.name}",
                hint=f"use an {cls.name} key",
            )
        return None, public


def check_hmac_secret(secret: bytes, *, key_id: str | None, where: str) -> bytes:
    """``WeakKeyError`` unless ``secret`` is long enough and looks random."""
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


def _hmac_checksum(secret: bytes) -> bytes:
    return hashlib.sha256(HMAC_CHECKSUM_TAG + secret).digest()[:HMAC_CHECKSUM_BYTES]


def format_hmac_key(secret: bytes) -> str:
    """``secret`` in the project's HMAC key format (what ``keys export-secret`` prints)."""
    check_hmac_secret(secret, key_id=None, where="the secret to format")
    body = base64.urlsafe_b64encode(secret + _hmac_checksum(secret)).rstrip(b"=")
    return HMAC_KEY_PREFIX + body.decode("ascii")


def parse_hmac_key(text: bytes | str, *, where: str, key_id: str | None = None) -> bytes:
    """The secret in a value of the project's HMAC key format; ``WeakKeyError`` for anything
    else (a passphrase, bare base64, a truncated or mistyped key)."""
    raw = text.encode("utf-8", "replace") if isinstance(text, str) else bytes(text)
    raw = raw.strip()
    how = (
        "generate one with `dagster-wandb-secure keys generate -k PATH --alg hmac-sha256`, then "
        "print it with `dagster-wandb-secure keys export-secret KID -k PATH`"
    )
    prefix = HMAC_KEY_PREFIX.encode("ascii")
    if not raw.startswith(prefix):
        raise WeakKeyError(
            f"{where} is not a dagster-wandb-secure HMAC key (it must start with "
            f"{HMAC_KEY_PREFIX!r}); a passphrase or a bare base64 string is never used as a key",
            key_id=key_id,
            hint=how,
        )
    body = raw[len(prefix) :]
    try:
        if len(body) > 2 * MAX_HMAC_SECRET_BYTES or b"=" in body or b"\n" in body:
            raise ValueError("bad shape")
        data = base64.b64decode(body + b"=" * (-len(body) % 4), altchars=b"-_", validate=True)
    except (ValueError, binascii.Error):
        raise WeakKeyError(
            f"{where} is not a valid HMAC key (bad base64 after {HMAC_KEY_PREFIX!r})",
            key_id=key_id,
            hint=how,
        ) from None
    secret, checksum = data[:-HMAC_CHECKSUM_BYTES], data[-HMAC_CHECKSUM_BYTES:]
    if len(data) <= HMAC_CHECKSUM_BYTES or not hmac.compare_digest(
        checksum, _hmac_checksum(secret)
    ):
        raise WeakKeyError(
            f"{where} is not a valid HMAC key (its checksum does not match: truncated or mistyped)",
            key_id=key_id,
            hint="copy the whole value again; " + how,
        )
    return check_hmac_secret(secret, key_id=key_id, where=where)


def decode_b64_secret(text: bytes) -> bytes:
    """Strict base64 (standard or URL-safe alphabet, padding optional, whitespace ignored)."""
    compact = b"".join(text.split())
    if not compact:
        raise ValueError("empty")
    if b"-" in compact or b"_" in compact:
        compact = compact.replace(b"-", b"+").replace(b"_", b"/")
    compact += b"=" * (-len(compact) % 4)
    return base64.b64decode(compact, validate=True)


class HmacSha256(SignatureAlgorithm):
    """HMAC-SHA256: a shared secret of >= 32 random bytes, stored as base64, no public half."""

    name = "hmac-sha256"
    signature_size = 32
    private_suffix = ".hmac"
    public_suffix = None
    summary = "shared secret"

    @classmethod
    def check_passphrase_allowed(cls) -> None:
        raise KeyStoreError(
            f"only {' and '.join((n for n, c in REGISTRY.items() if c.supports_passphrase))} PEM files can be "
            "passphrase-encrypted; an HMAC secret is protected by the file mode alone",
            hint=f"drop --passphrase-env, or use --alg {DEFAULT_ALGORITHM}",
        )

    @classmethod
    def generate(cls, passphrase: bytes | None) -> GeneratedKey:
        secret = secrets.token_bytes(HMAC_SECRET_BYTES)
        text = format_hmac_key(secret).encode("ascii") + b"\n"
        return GeneratedKey(text, None, cls.fingerprint(secret))

    @classmethod
    def load_private(
        cls, data: bytes, *, password: bytes | None, passphrase_env: str | None, path: str, kid: str
    ) -> bytes:
        if data.lstrip().startswith(HMAC_KEY_PREFIX.encode("ascii")):
            return parse_hmac_key(data, where=str(path), key_id=kid)
        # Key files written before the key format existed hold bare base64; they were generated
        # by a key store (0600, checked against the record's fingerprint), never typed by a human.
        try:
            secret = decode_b64_secret(data)
        except (ValueError, binascii.Error):
            raise WeakKeyError(f"{path} is not base64", key_id=kid) from None
        return check_hmac_secret(secret, key_id=kid, where=str(path))

    @classmethod
    def verify_key_of(cls, private: bytes) -> bytes:
        return private

    @classmethod
    def fingerprint(cls, verify_key: bytes) -> str:
        return hashlib.sha256(HMAC_FINGERPRINT_TAG + verify_key).hexdigest()

    @classmethod
    def signer(cls, kid: str, private: bytes) -> SigningKey:
        return _HmacSigner(kid, cls.name, private)

    @classmethod
    def prepare_verify(cls, verify_key: bytes) -> crypto_hmac.HMAC:
        return _keyed_hmac(verify_key)

    @classmethod
    def verify(
        cls, verify_key: bytes | crypto_hmac.HMAC, message: bytes, signature: bytes
    ) -> bool:
        keyed = verify_key if isinstance(verify_key, crypto_hmac.HMAC) else _keyed_hmac(verify_key)
        mac = keyed.copy()
        mac.update(message)
        try:
            mac.verify(bytes(signature))  # constant-time comparison (cryptography)
        except InvalidSignature:
            return False
        return True

    @classmethod
    def mismatch_message(cls) -> str:
        return "the HMAC-SHA256 signature does not match"

    @classmethod
    def no_public_half(cls, kid: str) -> KeyStoreError:
        return KeyStoreError(
            f"key {kid} is {cls.name}: an HMAC key has no public half to export",
            key_id=kid,
            hint="share an HMAC secret only through a secret manager (load_env_key), or "
            f"use an {DEFAULT_ALGORITHM} key for readers outside this trust boundary",
        )

    @classmethod
    def claims_env_value(cls, data: bytes) -> bool:
        return True  # the fallback: anything that is not a PEM must be a base64 secret

    @classmethod
    def load_env(cls, data: bytes, var: str) -> tuple[bytes, bytes]:
        secret = parse_hmac_key(data, where=f"the environment variable {var}")
        return secret, secret


# --- the registry --------------------------------------------------------------------------------

# name -> class, in allow-list order (environment values are matched in this order too)
REGISTRY: dict[str, type[SignatureAlgorithm]] = {cls.name: cls for cls in (Ed25519, HmacSha256)}
ALGORITHMS: tuple[str, ...] = tuple(REGISTRY)  # the allow-list, exact lowercase match
DEFAULT_ALGORITHM = Ed25519.name
ED25519 = Ed25519.name
HMAC_SHA256 = HmacSha256.name
SIGNATURE_SIZES: dict[str, int] = {name: cls.signature_size for name, cls in REGISTRY.items()}
# the algorithms whose public half can be exported and imported as a PEM bundle
PUBLIC_KEY_ALGORITHMS: tuple[str, ...] = tuple(
    name for name, cls in REGISTRY.items() if cls.has_public_half()
)


def algorithm(name: str) -> type[SignatureAlgorithm]:
    """The class of an allow-listed algorithm name (callers check membership first)."""
    return REGISTRY[name]
