"""The read-only view of a verified artifact version handed to user code: every file it exposes
is a private copy that was verified against the signed manifest."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..core.errors import SecureArtifactError
from ..core.fsutil import safe_relpath
from .publishing import PAYLOAD_STEM
from .wandb_objects import load_wandb_object

if TYPE_CHECKING:
    from .verification import VerifiedVersion

__all__ = ["ArtifactView", "VerifiedEntry"]


class VerifiedEntry:
    """One file of an ``ArtifactView``; ``download()`` returns the verified private copy."""

    def __init__(self, version: VerifiedVersion, path: str) -> None:
        self._version = version
        self.path = path

    def download(self, root: str | None = None, **_: Any) -> str:
        return str(self._version.materialize(self.path))

    def __fspath__(self) -> str:
        return self.download()

    def __str__(self) -> str:
        return self.download()

    def __repr__(self) -> str:
        return f"VerifiedEntry({self.path!r})"


class ArtifactView:
    """A read-only, verified view of one artifact version (what a whole-artifact read returns).

    Mirrors the parts of ``wandb.Artifact`` a reader uses: ``name`` (``name:vN``), ``version``,
    ``type``, ``description``, ``metadata``, ``aliases``, ``get(name)``, ``get_path(name)``,
    ``get_entry(name)``, ``download()`` and ``files()``. Every file it hands out is a verified
    private copy."""

    def __init__(self, verified: VerifiedVersion) -> None:
        self._v = verified
        av = verified.av
        self.name = f"{av.name}:{av.version_label}"
        self.source_name = av.name
        self.version = av.version_label
        self.type = av.type
        # signed values only (format 2 manifest); what the store's index says now is unsigned
        self.description = verified.signed_description
        self.metadata = verified.signed_metadata
        self.aliases = verified.signed_aliases
        self.sequence = verified.sequence
        self.unsigned_current_aliases = list(av.aliases)
        self.entity = av.entity
        self.project = av.project
        self.qualified_name = av.qualified_name
        self.references = [dict(r) for r in verified.references]
        self.signing_key_id = verified.key_id
        self.signature_algorithm = verified.algorithm

    def files(self) -> list[str]:
        return sorted(self._v.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.files())

    def get_entry(self, name: str) -> VerifiedEntry:
        name = safe_relpath(name, what="file name")
        if name not in self._v.entries:
            raise KeyError(f"path not contained in artifact {self.name}: {name}")
        return VerifiedEntry(self._v, name)

    def get_path(self, name: str) -> VerifiedEntry:
        return self.get_entry(name)

    def get(self, name: str) -> Any:
        payload = f"{PAYLOAD_STEM}.{name}" if not name.startswith(PAYLOAD_STEM + ".") else name
        try:
            if payload in self._v.payload_files():
                return self._v.unseal_payload(payload)
            return load_wandb_object(self._v.source(), name)
        except SecureArtifactError as exc:
            raise self._v.locate(exc) from None

    def download(self, root: str | None = None, **_: Any) -> str:
        """Materialize every file; returns the private folder holding them."""
        for name in self._v.entries:
            self._v.materialize(name)
        return str(self._v._version_dir())

    @property
    def root(self) -> str:
        return self.download()

    def __repr__(self) -> str:
        return f"ArtifactView({self.qualified_name!r}, type={self.type!r})"
