"""Typed errors. Every refusal the library makes is one of these.

Each verification error carries the artifact it was about (taken from the reader's expected
context), the key id named by the envelope (if any was read), the reason, and a hint saying what
to do. ``str(err)`` renders all four, so a Dagster step failure is self-explanatory.
"""

from __future__ import annotations


class SecureArtifactError(Exception):
    """Base of every error raised by dagster-wandb-secure."""

    default_hint = ""

    def __init__(
        self,
        reason: str,
        *,
        artifact: str | None = None,
        key_id: str | None = None,
        version: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.reason = reason
        self.artifact = artifact
        self.key_id = key_id
        self.version = version
        self.hint = hint if hint is not None else self.default_hint
        super().__init__(self._render())

    # Verification errors always state artifact and key id (even as "none"); other errors
    # (key store, configuration) state them only when they are known.
    always_locate = False

    def _render(self) -> str:
        parts: list[str] = []
        if self.artifact or self.always_locate:
            where = self.artifact or "<unnamed payload>"
            if self.version and ":" not in where:
                where = f"{where}:{self.version}"
            parts.append(f"artifact {where}")
        if self.key_id or self.always_locate:
            parts.append(f"key id {self.key_id or '<none>'}")
        parts.append(self.reason)
        msg = f"{type(self).__name__}: " + "; ".join(parts)
        if self.hint:
            msg += f". What to do: {self.hint}"
        return msg

    def __str__(self) -> str:  # keep the rendered message even if attributes change later
        return self._render()

    def with_location(
        self, *, artifact: str | None = None, version: str | None = None
    ) -> SecureArtifactError:
        """Fill in where the error happened when a lower layer did not know it."""
        if artifact and not self.artifact:
            self.artifact = artifact
        if version and not self.version:
            self.version = version
        self.args = (self._render(),)
        return self


# --- verification: the payload or its envelope must not be trusted -----------------------------


class SignatureVerificationError(SecureArtifactError):
    """Base of every reason a payload was refused. Nothing from it was deserialized."""

    always_locate = True

    default_hint = "do not use this artifact; run `dagster-wandb-secure audit` and investigate"


class TamperedPayloadError(SignatureVerificationError):
    """The signature, the digest or the length does not match: the bytes were changed."""

    default_hint = (
        "the stored bytes differ from what was signed; treat the store as compromised, "
        "re-materialize the asset and run `dagster-wandb-secure audit` (it re-hashes every payload)"
    )


class UnknownKeyError(SignatureVerificationError):
    """The envelope names a key id the key store does not hold (or a malformed key id)."""

    default_hint = (
        "if this writer is trusted, import its public key with "
        "`dagster-wandb-secure keys import-public FILE`; otherwise the artifact is not yours"
    )


class RevokedKeyError(SignatureVerificationError):
    """The signing key was revoked (or destroyed): it verifies nothing."""

    default_hint = (
        "re-materialize the asset with the current primary key, or run "
        "`dagster-wandb-secure resign --from KID` for artifacts whose ledger digest still matches"
    )


class ExpiredKeyError(SignatureVerificationError):
    """The key is past its not-after date for this use."""

    default_hint = (
        "rotate keys (`dagster-wandb-secure keys rotate`) and re-sign with "
        "`dagster-wandb-secure resign --from KID`"
    )


class AlgorithmMismatchError(SignatureVerificationError):
    """The header names an algorithm other than the one the key is bound to, or one not allowed."""

    default_hint = "the envelope is forged or corrupted; do not use it"


class ContextMismatchError(SignatureVerificationError):
    """A valid envelope was presented for another artifact, type, partition or serializer."""

    default_hint = (
        "an envelope signed for one artifact was replayed as another; check who can write "
        "to the artifact store"
    )


class MalformedEnvelopeError(SignatureVerificationError):
    """The container is truncated, oversized, non-canonical or of an unknown version."""

    default_hint = "the file is not a valid signed envelope; re-materialize the asset"


class UnsignedPayloadError(SignatureVerificationError):
    """The payload is not inside a signed envelope (for example a legacy upstream pickle)."""

    default_hint = (
        "legacy unsigned artifacts must be migrated with `dagster-wandb-secure adopt`, "
        "which scans them statically and re-publishes them signed"
    )


class SerializerNotAllowedError(SignatureVerificationError):
    """Policy forbids this serializer (even a validly signed one)."""

    default_hint = "allow the serializer in the policy only if you trust every writer of it"


class RollbackError(SignatureVerificationError):
    """An alias points to an older version than the ledger has already seen for it."""

    default_hint = (
        "someone moved the alias back to an older version; read an explicit version if that "
        "was intended, otherwise investigate who can move aliases"
    )


class ResourceLimitError(MalformedEnvelopeError):
    """A size, count or nesting limit of the policy was exceeded before anything was allocated."""

    default_hint = "raise the policy limit only if the artifact is expected to be that large"


# --- key store -----------------------------------------------------------------------------------


class KeyStoreError(SecureArtifactError):
    """The key store is missing, unreadable or asked to do something invalid."""

    default_hint = "run `dagster-wandb-secure keys list` to see the key store's state"


class KeyPermissionError(KeyStoreError):
    """A private key file or the key store folder is readable by group or others."""


class WeakKeyError(KeyStoreError):
    """Key material is too short or of the wrong shape."""

    default_hint = "generate a key with `dagster-wandb-secure keys generate`"


class NoSigningKeyError(KeyStoreError):
    """No key may sign: no primary, or the primary is expired, revoked or public-only."""

    default_hint = (
        "generate and promote a key: `dagster-wandb-secure keys rotate` "
        "(or `keys generate` then `keys promote KID`)"
    )


# --- serializers and configuration ---------------------------------------------------------------


class SerializationError(SecureArtifactError):
    """An object could not be serialized, or a serializer's parameters are invalid."""

    default_hint = "choose another serialization module or fix its parameters"


class SerializerUnavailableError(SerializationError):
    """The serializer's module is not installed."""


class UnsafePathError(SecureArtifactError):
    """A file name from an artifact, a manifest or a configuration is not a safe relative path,
    or a file is a symlink / not a regular file."""

    default_hint = "artifact file names must be plain relative paths to regular files"


class ConfigurationError(SecureArtifactError):
    """Invalid configuration (unknown key, wrong type, conflicting options)."""

    default_hint = "fix the configuration; the message names the key"
