"""Key files of a key store: the ``private/`` and ``public/`` folders, their permissions, and caches.

``private/<kid><suffix>`` holds a key's private material (mode 0600, in a 0700 folder) and
``public/<kid><suffix>`` the public half of an asymmetric key (0644); the suffixes come from the
algorithm table (``core/algorithms.py``). Loaded material is cached per (key id, file identity),
so the hot path costs one ``stat`` of the key file. Writing files is the key store's job.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import stat
import threading
from pathlib import Path
from typing import Any

from .algorithms import REGISTRY, algorithm
from .errors import KeyPermissionError, KeyStoreError, WeakKeyError
from .fsutil import PRIVATE_DIR_MODE, check_owner, check_private_mode, fsync_dir, open_no_follow
from .keyrecords import KeyRecord, file_sig

__all__ = [
    "MAX_KEY_FILE_BYTES",
    "PRIVATE_DIR",
    "PUBLIC_DIR",
    "PUBLIC_FILE_MODE",
    "KeyFiles",
    "check_not_writable_by_others",
    "passphrase",
]

PRIVATE_DIR = "private"
PUBLIC_DIR = "public"
PUBLIC_FILE_MODE = 0o644
MAX_KEY_FILE_BYTES = 64 * 1024


def passphrase(var: str, kid: str | None) -> bytes:
    """The passphrase that encrypts a PEM file, from the environment variable ``var``."""
    value = os.environ.get(var)
    if not value:
        raise KeyStoreError(
            f"the passphrase environment variable {var} is not set or empty",
            key_id=kid,
            hint=f"export {var} with the passphrase that encrypts this key's PEM file",
        )
    return value.encode("utf-8")


def check_not_writable_by_others(path: Path) -> None:
    st = path.stat()
    if st.st_mode & 0o022:
        raise KeyPermissionError(
            f"{path} has mode {stat.S_IMODE(st.st_mode):o}, writable by group or others: "
            "anyone in them could replace the trusted keys",
            hint=f"run: chmod 700 {path}",
        )


class KeyFiles:
    """The key file folders of the store at ``root`` and the key material loaded from them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.private_dir = root / PRIVATE_DIR
        self.public_dir = root / PUBLIC_DIR
        self._mutex = threading.RLock()
        # kid -> (the file's stat signature + the record it was checked against, material): a
        # hit needs the same file AND the same record (alg, fingerprint), so a keystore.json
        # that changes a key's fingerprint is checked against the file again
        self._privates: dict[str, tuple[tuple[Any, ...], Any]] = {}
        self._publics: dict[str, tuple[tuple[Any, ...], Any]] = {}
        self._paths: dict[tuple[str, str], str] = {}
        self._prepared: dict[str, tuple[Any, Any]] = {}  # kid -> (verify key, prepared state)
        self.dirs_checked = False

    def after_fork(self) -> None:
        """In a forked child: drop the lock another parent thread may have held."""
        self._mutex = threading.RLock()

    # -- folders ----------------------------------------------------------------------------------

    def ensure_dirs(self) -> None:
        for folder in (self.private_dir, self.public_dir):
            if not folder.exists():
                folder.mkdir(mode=PRIVATE_DIR_MODE if folder is self.private_dir else 0o755)
        os.chmod(self.private_dir, PRIVATE_DIR_MODE)

    def check_private_dirs(self) -> None:
        check_private_mode(self.root)
        if self.private_dir.exists():
            check_private_mode(self.private_dir)
            check_owner(self.private_dir, what="private key folder")
        self.dirs_checked = True

    # -- names ------------------------------------------------------------------------------------

    def private_path(self, kid: str, alg: str) -> Path:
        return self.private_dir / f"{kid}{algorithm(alg).private_suffix}"

    def public_path(self, kid: str, alg: str) -> Path:
        suffix = algorithm(alg).public_suffix
        assert suffix is not None, "a symmetric algorithm has no public file"
        return self.public_dir / f"{kid}{suffix}"

    def candidate_paths(self, kid: str) -> list[Path]:
        """Every file a key ``kid`` of any algorithm could have."""
        out = [self.private_dir / f"{kid}{cls.private_suffix}" for cls in REGISTRY.values()]
        out.extend(
            self.public_dir / f"{kid}{cls.public_suffix}"
            for cls in REGISTRY.values()
            if cls.public_suffix is not None
        )
        return out

    def private_file(self, record: KeyRecord) -> str:
        """The private key file of a (validated) kid, as a cached string (hot path)."""
        key = (record.kid, record.alg)
        path = self._paths.get(key)
        if path is None:
            path = self._paths[key] = str(self.private_path(record.kid, record.alg))
        return path

    def public_file(self, record: KeyRecord) -> str:
        key = (record.kid, "public")
        path = self._paths.get(key)
        if path is None:
            path = self._paths[key] = str(self.public_path(record.kid, record.alg))
        return path

    # -- reading ----------------------------------------------------------------------------------

    def stat_private(self, path: str, kid: str) -> tuple[int, ...]:
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
        if st.st_uid != os.geteuid():  # check_owner's test, inlined (the hot path)
            check_owner(path, st, what="private key file")
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)  # file_sig

    def read_private(self, path: str, kid: str) -> bytes:
        if not self.dirs_checked:
            self.check_private_dirs()
        check_private_mode(Path(path))
        with open_no_follow(path) as fh:
            if os.fstat(fh.fileno()).st_mode & 0o077:
                check_private_mode(Path(path))
            data = fh.read(MAX_KEY_FILE_BYTES + 1)
        if len(data) > MAX_KEY_FILE_BYTES:
            raise WeakKeyError(f"{path} is too large to be a key file", key_id=kid)
        return data

    @staticmethod
    def check_fingerprint(record: KeyRecord, actual: str, path: str) -> None:
        if not hmac.compare_digest(actual, record.fingerprint):
            raise KeyStoreError(
                f"{path} does not hold the key recorded for {record.kid} (fingerprint mismatch)",
                key_id=record.kid,
                hint="a key file was replaced; restore it from a backup or revoke the key",
            )

    def private_material(self, record: KeyRecord) -> Any:
        """The loaded private material of ``record`` (checked against its fingerprint)."""
        path = self.private_file(record)
        sig = (*self.stat_private(path, record.kid), record.alg, record.fingerprint)
        hit = self._privates.get(record.kid)
        if hit is not None and hit[0] == sig:
            return hit[1]
        return self._load_private(record, path, sig)

    def _load_private(self, record: KeyRecord, path: str, sig: tuple[int, ...]) -> Any:
        """Read, load and check (fingerprint) the private file of ``record`` whose ``lstat``
        gave ``sig``, and cache it under that identity."""
        algo = algorithm(record.alg)
        data = self.read_private(path, record.kid)
        password = passphrase(record.passphrase_env, record.kid) if record.passphrase_env else None
        private = algo.load_private(
            data,
            password=password,
            passphrase_env=record.passphrase_env,
            path=path,
            kid=record.kid,
        )
        self.check_fingerprint(record, algo.fingerprint(algo.verify_key_of(private)), path)
        with self._mutex:
            self._privates[record.kid] = (sig, private)
        return private

    def public_material(self, record: KeyRecord) -> Any:
        """The loaded public key of ``record`` from its public file (asymmetric algorithms)."""
        algo = algorithm(record.alg)
        path = self.public_file(record)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise KeyStoreError(
                f"the public key file {path} is missing",
                key_id=record.kid,
                hint="restore it, or import the key again with `keys import-public`",
            ) from None
        check_owner(path, st, what="public key file")
        sig = (*file_sig(st), record.alg, record.fingerprint)
        hit = self._publics.get(record.kid)
        if hit is not None and hit[0] == sig:
            return hit[1]
        with open_no_follow(path) as fh:
            data = fh.read(MAX_KEY_FILE_BYTES + 1)
        key = algo.load_public(data[:MAX_KEY_FILE_BYTES], path=path, kid=record.kid)
        self.check_fingerprint(record, algo.fingerprint(key), path)
        with self._mutex:
            self._publics[record.kid] = (sig, key)
        return key

    def verify_key(self, record: KeyRecord) -> Any:
        """What verifies ``record``'s signatures: its public key, or (symmetric) its secret."""
        algo = algorithm(record.alg)
        if algo.has_public_half():
            return self.public_material(record)
        return algo.verify_key_of(self.private_material(record))

    def prepared_verify_key(self, record: KeyRecord) -> Any:
        """``verify_key`` with the algorithm's per-key state prepared once (``prepare_verify``),
        cached against the very material object it was made from: a reloaded key (a changed
        file) is a new object, so its state is prepared again."""
        algo = algorithm(record.alg)
        if algo.public_suffix is not None:  # verify_key, inlined (the hot path)
            key = self.public_material(record)
        else:
            key = algo.verify_key_of(self.private_material(record))
        hit = self._prepared.get(record.kid)
        if hit is not None and hit[0] is key:
            return hit[1]
        prepared = algo.prepare_verify(key)
        with self._mutex:
            self._prepared[record.kid] = (key, prepared)
        return prepared

    def forget(self, kid: str) -> None:
        with self._mutex:
            self._privates.pop(kid, None)
            self._publics.pop(kid, None)
            self._prepared.pop(kid, None)

    # -- removing ---------------------------------------------------------------------------------

    def remove_private(self, kid: str) -> None:
        removed = False
        for cls in REGISTRY.values():
            with contextlib.suppress(FileNotFoundError):
                (self.private_dir / f"{kid}{cls.private_suffix}").unlink()
                removed = True
        if removed:
            fsync_dir(self.private_dir)

    def remove_orphans(self, records: dict[str, KeyRecord]) -> list[Path]:
        """Remove key files no record references (and destroyed keys' private files)."""
        keep_private = {
            f"{r.kid}{algorithm(r.alg).private_suffix}" for r in records.values() if r.has_private
        }
        keep_public = {
            f"{r.kid}{algorithm(r.alg).public_suffix}"
            for r in records.values()
            if algorithm(r.alg).has_public_half()
        }
        removed: list[Path] = []
        for folder, keep in ((self.private_dir, keep_private), (self.public_dir, keep_public)):
            for entry in sorted(folder.iterdir()):
                if entry.name not in keep and (entry.is_file() or entry.is_symlink()):
                    entry.unlink()
                    removed.append(entry)
            fsync_dir(folder)
        return removed
