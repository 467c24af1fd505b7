"""Shared machinery for the adversarial suite (SECURITY.md, "Attack catalogue: tests and outcomes").

One ``World`` per test: a real key store (Ed25519 or HMAC-SHA256, by the ``alg`` fixture), a real
local artifact store, and the IO manager inside real ``dagster.materialize`` runs. The attacker
helpers act with the powers of the threat model: write access to the store folder (plant files,
publish versions without a manifest, move aliases) and their own keys, never the writer's.

Error checking uses one helper everywhere, ``refused``: it runs the action, finds the library's
typed error (Dagster re-raises the IO manager's exception as the step's user exception; the chain
is walked in case a layer wraps it), checks the *exact* type, and that the rendered message
names the artifact and the reason.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dagster import (
    AssetIn,
    AssetKey,
    AssetsDefinition,
    PartitionsDefinition,
    SourceAsset,
    asset,
    materialize,
)
from dagster_wandb_secure.core import canonical
from dagster_wandb_secure.core.envelope import MAGIC, PREAMBLE, PREAMBLE_SIZE, TAG
from dagster_wandb_secure.core.errors import SecureArtifactError
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.manifest import MANIFEST_NAME
from dagster_wandb_secure.io_manager import WandbArtifactsIOManager
from dagster_wandb_secure.stores.base import ArtifactVersion
from dagster_wandb_secure.stores.local import LocalArtifactStore

ALGS = ("ed25519", "hmac-sha256")
ENTITY, PROJECT = "team", "proj"
IOM_KEY = "m"


# --- the one error helper -------------------------------------------------------------------


def find_secure_error(exc: BaseException) -> SecureArtifactError | None:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        cur = todo.pop(0)
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, SecureArtifactError):
            return cur
        todo.extend([cur.__cause__, cur.__context__, getattr(cur, "user_exception", None)])
    return None


def refused(
    action: Callable[[], Any],
    exc_type: type[SecureArtifactError],
    *,
    artifact: str | None,
    reason: str,
) -> SecureArtifactError:
    """Run ``action``; it must raise exactly ``exc_type`` whose message names ``artifact`` and
    matches the regular expression ``reason`` (case-insensitive)."""
    try:
        value = action()
    except BaseException as exc:  # noqa: BLE001 - inspected below
        err = find_secure_error(exc)
        if err is None:
            raise AssertionError(f"expected {exc_type.__name__}, got an untyped {exc!r}") from exc
    else:
        raise AssertionError(f"expected {exc_type.__name__}, but the action returned {value!r}")
    text = str(err)
    assert type(err) is exc_type, f"expected {exc_type.__name__}, got {text}"
    if artifact is not None:
        assert artifact in text, f"message does not name artifact {artifact!r}: {text}"
    assert re.search(reason, text, re.IGNORECASE), f"reason /{reason}/ not in: {text}"
    assert "What to do:" in text, f"no hint in: {text}"
    return err


def refusal(action: Callable[[], Any]) -> SecureArtifactError:
    """Run ``action``; it must raise one of the library's typed errors, which is returned."""
    try:
        value = action()
    except BaseException as exc:  # noqa: BLE001 - inspected below
        err = find_secure_error(exc)
        if err is None:
            raise AssertionError(f"expected a typed refusal, got {exc!r}") from exc
        return err
    raise AssertionError(f"expected a typed refusal, but the action returned {value!r}")


# --- envelope surgery (the attacker's tools) -------------------------------------------------


@dataclass
class Parsed:
    preamble: bytes
    fields: dict[str, Any]
    header: bytes
    signature: bytes
    payload: bytes


def parse(envelope: bytes) -> Parsed:
    _magic, _v, _f, hlen, slen = PREAMBLE.unpack(envelope[:PREAMBLE_SIZE])
    header = envelope[PREAMBLE_SIZE : PREAMBLE_SIZE + hlen]
    sig = envelope[PREAMBLE_SIZE + hlen : PREAMBLE_SIZE + hlen + slen]
    return Parsed(
        envelope[:PREAMBLE_SIZE],
        canonical.decode(header),
        header,
        sig,
        envelope[PREAMBLE_SIZE + hlen + slen :],
    )


def forge(
    envelope: bytes,
    *,
    signer: Any = None,
    signature: bytes | None = None,
    header_bytes: bytes | None = None,
    payload: bytes | None = None,
    sig_len: int | None = None,
    version: int = 1,
    **changes: Any,
) -> bytes:
    """Rebuild an envelope with header ``changes`` (a value of ``...`` deletes the key).

    The new header is signed with ``signer`` (anything with ``sign(message)``: an attacker's key,
    or a raw HMAC over chosen bytes); with neither ``signer`` nor ``signature`` the original
    signature is kept (so it no longer matches)."""
    p = parse(envelope)
    fields = dict(p.fields)
    for key, value in changes.items():
        if value is ...:
            fields.pop(key, None)
        else:
            fields[key] = value
    if payload is not None:
        from dagster_wandb_secure.core.digests import digest_bytes, get_digest

        alg = fields.get("digest_alg", "sha256")
        field = get_digest(alg).header_field
        fields.setdefault(field, "")
        if field not in changes:
            fields[field] = digest_bytes(alg, payload)
        if "payload_length" not in changes:
            fields["payload_length"] = len(payload)
    body = header_bytes if header_bytes is not None else canonical.encode(fields)
    if signature is None and signer is None:
        signature = p.signature
    slen = sig_len if sig_len is not None else len(signature) if signature is not None else 64
    if signer is not None and signature is None:
        probe = signer.sign(b"x")
        slen = sig_len if sig_len is not None else len(probe)
    preamble = PREAMBLE.pack(MAGIC, version, 0, len(body), slen)
    if signer is not None and signature is None:
        signature = signer.sign(TAG + preamble + body)
    assert signature is not None
    return preamble + body + signature + (payload if payload is not None else p.payload)


def flip_bit(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


# --- the world ---------------------------------------------------------------------------


@dataclass
class World:
    root: Path
    alg: str
    keys: Path
    ks: KeyStore
    store_dir: Path
    attacker_keys: Path
    _attacker: KeyStore | None = None
    _staging: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def store(self) -> LocalArtifactStore:
        return LocalArtifactStore(self.store_dir)

    @property
    def attacker(self) -> KeyStore:
        """The attacker's own key store (same algorithm, a key the reader does not trust)."""
        if self._attacker is None:
            self._attacker = KeyStore.open(self.attacker_keys)
            self._attacker.generate(self.alg)
        return self._attacker

    def iom(self, **overrides: Any) -> WandbArtifactsIOManager:
        settings: dict[str, Any] = {
            "key_store": str(self.keys),
            "store": self.extra.get("store", "local"),  # "wandb": offline, mirror = store_dir
            "local_store_dir": str(self.store_dir),
            "base_dir": str(self.root / "base"),
            "entity": ENTITY,
            "project": PROJECT,
        }
        settings.update(overrides)
        return WandbArtifactsIOManager(**settings)

    # -- writing through Dagster ----------------------------------------------------------

    def producer(
        self,
        name: str,
        value: Any,
        *,
        config: Mapping[str, Any] | None = None,
        partitions_def: PartitionsDefinition | None = None,
    ) -> AssetsDefinition:
        meta = {"wandb_artifact_configuration": dict(config)} if config else None

        @asset(name=name, io_manager_key=IOM_KEY, metadata=meta, partitions_def=partitions_def)
        def _producer() -> Any:
            return value

        return _producer

    def write(
        self,
        name: str,
        value: Any,
        *,
        config: Mapping[str, Any] | None = None,
        partitions_def: PartitionsDefinition | None = None,
        partition_key: str | None = None,
        iom: WandbArtifactsIOManager | None = None,
    ) -> ArtifactVersion:
        prod = self.producer(name, value, config=config, partitions_def=partitions_def)
        result = materialize(
            [prod], resources={IOM_KEY: iom or self.iom()}, partition_key=partition_key
        )
        assert result.success
        full = name if partition_key is None else f"{name}.{partition_key}"
        return self.store.resolve(ENTITY, PROJECT, full, alias="latest")

    # -- reading through Dagster ----------------------------------------------------------

    def read(
        self,
        name: str,
        *,
        config: Mapping[str, Any] | None = None,
        source: bool = True,
        partitions_def: PartitionsDefinition | None = None,
        iom: WandbArtifactsIOManager | None = None,
        value: Any = None,
    ) -> Any:
        """Materialize an asset that takes ``name`` as input; returns what the input held.

        ``source=True`` reads through a ``SourceAsset``; otherwise the upstream is a regular
        asset (not re-materialized) and its asset key is bound on read."""
        got: dict[str, Any] = {}
        meta = {"wandb_artifact_configuration": dict(config)} if config else {}
        if source:
            upstream: Any = SourceAsset(
                key=AssetKey(name), io_manager_key=IOM_KEY, partitions_def=partitions_def
            )
        else:
            upstream = self.producer(name, value, partitions_def=partitions_def)

        @asset(
            name=f"reader_of_{name.replace('.', '_').replace('-', '_')}",
            ins={"up": AssetIn(key=AssetKey(name), metadata=meta, input_manager_key=IOM_KEY)},
        )
        def _reader(up: Any) -> None:
            got["value"] = up

        materialize(
            [upstream, _reader], resources={IOM_KEY: iom or self.iom()}, selection=[_reader]
        )
        return got["value"]

    # -- the attacker's store access -------------------------------------------------------

    def staging(self) -> Path:
        self._staging += 1
        path = self.root / "attacker-staging" / str(self._staging)
        path.mkdir(parents=True)
        return path

    def plant_version(
        self, name: str, files: Mapping[str, bytes], *, type_: str = "artifact"
    ) -> ArtifactVersion:
        """Publish a version holding exactly ``files`` (no manifest unless given)."""
        folder = self.staging()
        paths: dict[str, Path] = {}
        for rel, data in files.items():
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            paths[rel] = target
        return self.store.publish(
            entity=ENTITY, project=PROJECT, name=name, type=type_, files=paths
        )

    def path(self, av: ArtifactVersion, rel: str) -> Path:
        return self.store.file_path(av, rel)

    def bytes_of(self, av: ArtifactVersion, rel: str = "output.pickle") -> bytes:
        return self.path(av, rel).read_bytes()

    def overwrite(self, av: ArtifactVersion, rel: str, data: bytes) -> None:
        """Replace a file inside a published version folder (store write access)."""
        path = self.path(av, rel)
        os.chmod(path.parent, 0o755)
        if path.exists() or path.is_symlink():
            path.unlink()
        path.write_bytes(data)

    def files_of(self, av: ArtifactVersion) -> dict[str, bytes]:
        return {rel: self.bytes_of(av, rel) for rel in av.files}


# --- one key store, one folder (the tests that need no World) ---------------------------------


@pytest.fixture(name="root")
def one_key_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A test folder (the working directory) holding ``keys``: one Ed25519 key, its ledger."""
    monkeypatch.chdir(tmp_path)
    ks = KeyStore.open(tmp_path / "keys")
    ks.generate("ed25519")
    ks.ledger.close()
    yield tmp_path


def store_iom(
    root: Path, store: str, *, keys: Path | None = None, **settings: Any
) -> WandbArtifactsIOManager:
    """The IO manager over ``root``'s store (``local``, or ``wandb`` offline: its mirror is the
    same folder), signing and verifying with ``keys`` (default ``root/keys``)."""
    return WandbArtifactsIOManager(
        key_store=str(keys or root / "keys"), store=store, local_store_dir=str(root / "store"),
        base_dir=str(root / "base"), entity=ENTITY, project=PROJECT, **settings,
    )


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


__all__ = [
    "ALGS",
    "ENTITY",
    "MANIFEST_NAME",
    "PROJECT",
    "Parsed",
    "World",
    "flip_bit",
    "forge",
    "mode_of",
    "one_key_root",
    "parse",
    "find_secure_error",
    "refusal",
    "refused",
    "store_iom",
]
