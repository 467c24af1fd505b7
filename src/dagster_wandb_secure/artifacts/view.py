"""The verified artifact handed to user code: a ``wandb.Artifact`` whose every file and attribute
comes from a verified version (private verified copies, signed data), never from the store.

``ArtifactView`` holds the behaviour and needs no wandb; ``verified_artifact()`` returns an
instance of ``VerifiedArtifact``, a subclass of both ``ArtifactView`` and ``wandb.Artifact``, so
upstream's ``artifact: Artifact`` annotations pass Dagster's ``isinstance`` type check. Methods
that would fetch, change or expose unverified content raise ``UnverifiedAccessError`` naming
what to use instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

from ..core.errors import SecureArtifactError
from ..core.fsutil import safe_relpath
from .publishing import PAYLOAD_STEM
from .wandb_objects import load_wandb_object

if TYPE_CHECKING:
    from .verification import VerifiedVersion

__all__ = [
    "ArtifactView",
    "UnverifiedAccessError",
    "VerifiedEntry",
    "manifest_digest",
    "verified_artifact",
]


class UnverifiedAccessError(SecureArtifactError):
    """A ``wandb.Artifact`` method that would fetch, change or expose unverified content."""

    default_hint = (
        "use get(), get_path(), get_entry(), download(), files(), file(), verify() or link() "
        "on the verified artifact; to publish changes, return a new wandb.Artifact from an asset"
    )


def manifest_digest(verified: VerifiedVersion) -> str:
    """The SHA-256 of the signed manifest payload this version was verified against.

    Taken from the verifier when it records it; otherwise the manifest is verified again with the
    same expected context and its entries must equal the ones already verified (so the digest
    describes exactly the files handed out)."""
    if verified.manifest is not None:
        return verified.manifest.header.payload_sha256
    from ..core.manifest import verify_manifest

    again = verify_manifest(
        verified.on_disk,
        key_store=verified.session.key_store,
        expected_context=verified.context,
        policy=verified.session.policy,
        deep=False,
        version=verified.av.version_label,
    )
    if dict(again.entries) != dict(verified.entries):
        from ..core.errors import TamperedPayloadError

        raise TamperedPayloadError(
            "the signed manifest changed after the version was verified",
            artifact=verified.av.name,
            version=verified.av.version_label,
            key_id=again.header.kid,
        )
    return again.header.payload_sha256


class VerifiedEntry:
    """One file of a verified artifact; ``download()`` returns its verified private copy."""

    def __init__(self, version: VerifiedVersion, path: str) -> None:
        self._version = version
        self.path = path
        self.name = path

    @property
    def size(self) -> int:
        return int(self._version.entries[self.path].size)

    @property
    def digest(self) -> str | None:
        entry = self._version.entries[self.path]
        return entry.sha256 or entry.envelope_payload_sha256

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

    Attributes: ``name`` (``name:vN``: the name and ``type`` are bound in the signed context;
    ``version`` is the store's number, which a pinned read checks equals the one asked for),
    ``metadata``, ``description``, ``aliases`` (signed when the verifier provides them),
    ``created_at`` (the manifest's signed time),
    ``digest`` (of the signed manifest), ``id`` (W&B's, when known), ``entity``, ``project``,
    ``qualified_name``, ``signing_key_id``, ``signature_algorithm``. Content: ``get``,
    ``get_entry``, ``get_path``, ``download``, ``checkout``, ``files``, ``file``, ``verify``,
    iteration; ``link`` puts the version in a model registry."""

    def __init__(self, verified: VerifiedVersion) -> None:
        self._init_view(verified)

    def _init_view(self, verified: VerifiedVersion) -> None:
        object.__setattr__(self, "_v", verified)
        object.__setattr__(self, "references", [dict(r) for r in verified.references])

    # --- attributes (signed, or derived from signed data) -----------------------------------

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self._v.av.name}:{self._v.av.version_label}"

    @property
    def source_name(self) -> str:  # type: ignore[override]
        return str(self._v.av.name)

    @property
    def version(self) -> str:  # type: ignore[override]
        return str(self._v.av.version_label)

    @property
    def type(self) -> str:  # type: ignore[override]
        return str(self._v.av.type)

    @property
    def description(self) -> str | None:  # type: ignore[override]
        return self._v.signed_description

    @description.setter
    def description(self, _: Any) -> None:
        self._refuse("setting description")

    @property
    def metadata(self) -> dict[str, Any]:  # type: ignore[override]
        return self._v.signed_metadata

    @metadata.setter
    def metadata(self, _: Any) -> None:
        self._refuse("setting metadata")

    @property
    def aliases(self) -> list[str]:  # type: ignore[override]
        return self._v.signed_aliases

    @property
    def sequence(self) -> int | None:
        """The signed position of this version in its artifact's history (format 2)."""
        return self._v.sequence

    @property
    def unsigned_current_aliases(self) -> list[str]:
        """What the store's index says the aliases are NOW: unsigned, a hint only."""
        return list(self._v.av.aliases)

    @aliases.setter
    def aliases(self, _: Any) -> None:
        self._refuse("setting aliases")

    @property
    def tags(self) -> list[str]:  # type: ignore[override]
        return []

    @tags.setter
    def tags(self, _: Any) -> None:
        self._refuse("setting tags")

    @property
    def digest(self) -> str:  # type: ignore[override]
        return manifest_digest(self._v)

    @property
    def id(self) -> str | None:  # type: ignore[override]
        extra = dict(self._v.av.extra or {})
        value = extra.get("wandb_artifact_id") or extra.get("id")
        return str(value) if value else None

    @property
    def entity(self) -> str:  # type: ignore[override]
        return str(self._v.av.entity)

    @property
    def project(self) -> str:  # type: ignore[override]
        return str(self._v.av.project)

    @property
    def qualified_name(self) -> str:  # type: ignore[override]
        return str(self._v.av.qualified_name)

    @property
    def signing_key_id(self) -> str:
        return str(self._v.key_id)

    @property
    def signature_algorithm(self) -> str:
        return str(self._v.algorithm)

    @property
    def size(self) -> int:  # type: ignore[override]
        return sum(int(e.size) for e in self._v.entries.values())

    @property
    def file_count(self) -> int:  # type: ignore[override]
        return len(self._v.entries)

    @property
    def state(self) -> str:  # type: ignore[override]
        return "COMMITTED"

    @property
    def created_at(self) -> str:  # type: ignore[override]
        """When the version's manifest was signed (the index's ``created_at`` is unsigned)."""
        if self._v.manifest is None:
            self._refuse("created_at without a verified manifest")
        return self._v.manifest.header.signed_at.isoformat()

    @property
    def url(self) -> str:  # type: ignore[override]
        extra = dict(self._v.av.extra or {})
        return str(extra.get("wandb_artifact_url") or self._v.av.root.absolute().as_uri())

    @property
    def is_link(self) -> bool:  # type: ignore[override]
        return False

    # --- content, only through verification -------------------------------------------------

    def files(self, names: list[str] | None = None, per_page: int = 50) -> list[str]:  # type: ignore[override]
        """The names of the version's files (every one listed in the signed manifest)."""
        listed = sorted(self._v.entries)
        return [n for n in listed if n in names] if names else listed

    def __iter__(self) -> Iterator[str]:
        return iter(self.files())

    def __len__(self) -> int:
        return len(self._v.entries)

    def get_entry(self, name: str) -> VerifiedEntry:  # type: ignore[override]
        name = safe_relpath(str(name), what="file name")
        if name not in self._v.entries:
            raise KeyError(f"path not contained in artifact {self.name}: {name}")
        return VerifiedEntry(self._v, name)

    def get_path(self, name: str) -> VerifiedEntry:  # type: ignore[override]
        return self.get_entry(name)

    def get(self, name: str) -> Any:  # type: ignore[override]
        """The serialized output or W&B object stored under ``name``; ``None`` if absent (as
        ``wandb.Artifact.get``)."""
        payload = f"{PAYLOAD_STEM}.{name}" if not name.startswith(PAYLOAD_STEM + ".") else name
        try:
            if payload in self._v.payload_files():
                return self._v.unseal_payload(payload)
            return load_wandb_object(self._v.source(), name)
        except SecureArtifactError as exc:
            raise self._v.locate(exc) from None

    def download(self, root: str | None = None, **_: Any) -> str:  # type: ignore[override]
        """Materialize every file as a verified private copy; returns the private folder
        (``root`` is not used: the files stay in this process's private 0700 folder)."""
        for name in self._v.entries:
            self._v.materialize(name)
        return str(self._v._version_dir())

    def checkout(self, root: str | None = None) -> str:  # type: ignore[override]
        return self.download()

    def verify(self, root: str | None = None) -> None:  # type: ignore[override]
        """Hash every file against the signed manifest (each becomes a verified copy)."""
        self.download()

    def file(self, root: str | None = None) -> str:  # type: ignore[override]
        """The verified private copy of the only file of a one-file artifact."""
        names = [n for n in self._v.entries]
        if len(names) != 1:
            raise WandbArtifactFileError(
                f"file() needs an artifact with exactly one file; this one has {len(names)}",
                artifact=self._v.av.name,
                version=self._v.av.version_label,
                hint="use get_path(name).download() or download()",
            )
        return str(self._v.materialize(names[0]))

    @property
    def root(self) -> str:
        return self.download()

    # --- the model registry -------------------------------------------------------------------

    def link(self, target_path: str, aliases: Iterable[str] | str | None = None) -> Any:  # type: ignore[override]
        """Link this verified version into a registry collection (``model-registry/NAME``,
        ``ENTITY/model-registry/NAME``); returns the registry version's label."""
        from .registry import link_verified

        return link_verified(self._v, target_path, aliases)

    # --- everything else a wandb.Artifact offers --------------------------------------------

    def _refuse(self, what: str, instead: str | None = None) -> NoReturn:
        raise UnverifiedAccessError(
            f"{what} is not available on a verified artifact (it would fetch, change or "
            "expose content that was not verified)",
            artifact=self._v.av.name,
            version=self._v.av.version_label,
            hint=instead,
        )

    def __repr__(self) -> str:
        return f"VerifiedArtifact({self.qualified_name!r}, type={self.type!r})"


class WandbArtifactFileError(UnverifiedAccessError):
    """``file()`` on an artifact that does not hold exactly one file."""


_REFUSED = {
    "new_draft": "return a new wandb.Artifact from an asset to publish a new version",
    "save": "return a new wandb.Artifact from an asset to publish a new version",
    "wait": None,
    "finalize": None,
    "new_file": "return a new wandb.Artifact from an asset to publish a new version",
    "add_file": "return a new wandb.Artifact from an asset to publish a new version",
    "add_dir": "return a new wandb.Artifact from an asset to publish a new version",
    "add_reference": "return a new wandb.Artifact from an asset to publish a new version",
    "add": "return a new wandb.Artifact from an asset to publish a new version",
    "remove": None,
    "delete": "delete versions in the W&B UI or with the W&B API, outside the pipeline",
    "unlink": None,
    "used_by": "use `dagster-wandb-secure audit` for lineage",
    "logged_by": "use `dagster-wandb-secure audit` for lineage",
    "get_added_local_path_name": None,
    "json_encode": None,
}
_REFUSED_PROPERTIES = (
    "manifest",
    "collection",
    "source_collection",
    "source_artifact",
    "linked_artifacts",
    "ttl",
    "history_step",
)


def _refusing_method(method: str, instead: str | None) -> Any:
    def refused(self: ArtifactView, *_: Any, **__: Any) -> NoReturn:
        self._refuse(f"{method}()", instead)

    refused.__name__ = method
    return refused


def _refusing_property(prop: str) -> property:
    def getter(self: ArtifactView) -> NoReturn:
        self._refuse(f"the {prop!r} attribute")

    return property(getter)


_CLASS: type | None = None


def _verified_artifact_class() -> type:
    """``VerifiedArtifact(ArtifactView, wandb.Artifact)``, built once (wandb imported lazily)."""
    global _CLASS
    if _CLASS is None:
        import wandb

        namespace: dict[str, Any] = {
            "__doc__": "A verified artifact that is also a ``wandb.Artifact`` (see ArtifactView).",
            "__module__": __name__,
            "__init__": _init_verified_artifact,
        }
        for method, instead in _REFUSED.items():
            namespace[method] = _refusing_method(method, instead)
        for prop in _REFUSED_PROPERTIES:
            namespace[prop] = _refusing_property(prop)
        _CLASS = type("VerifiedArtifact", (ArtifactView, wandb.Artifact), namespace)
    return _CLASS


def _init_verified_artifact(self: Any, verified: VerifiedVersion) -> None:
    import wandb

    # wandb's constructor only validates and sets private fields (no run, no network); its name
    # and type checks are applied to the verified name and a neutral type (every public
    # attribute is overridden by ArtifactView's properties, which read the verified version).
    wandb.Artifact.__init__(self, str(verified.av.name), "artifact")
    self._init_view(verified)


def verified_artifact(verified: VerifiedVersion) -> ArtifactView:
    """The object a whole-artifact read hands to user code: a ``wandb.Artifact`` when wandb is
    installed (it always is for this package), else the plain view."""
    try:
        cls = _verified_artifact_class()
    except ImportError:  # pragma: no cover - wandb is a dependency
        return ArtifactView(verified)
    obj = cls.__new__(cls)
    obj.__init__(verified)
    return obj
