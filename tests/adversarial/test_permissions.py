"""Permissions (SECURITY.md attack catalogue item 25).

Every CLI command, run under a careless ``umask 000``, leaves private key files 0600 and the key
store and ``private/`` folders 0700 (and nothing in the store writable by group or others). A
loosened private key file or folder is refused by every command that needs it, and by the IO
manager, with the exact ``chmod`` that fixes it in the message.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dagster_wandb_secure.cli import app
from dagster_wandb_secure.core.errors import KeyPermissionError
from kit.adversarial import World, mode_of, refused

RUNNER = CliRunner()


@pytest.fixture
def careless_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def cli(keys: Path, *args: str, input: str | None = None) -> str:
    extra = [] if args[0] == "inspect" else ["-k", str(keys)]
    result = RUNNER.invoke(app, [*args, *extra], input=input, catch_exceptions=False)
    assert result.exit_code in (0, 1), result.output
    return result.stdout


def check_modes(keys: Path) -> None:
    assert mode_of(keys) == 0o700, oct(mode_of(keys))
    assert mode_of(keys / "private") == 0o700
    for path in keys.rglob("*"):
        m = mode_of(path)
        assert not m & 0o022, f"{path} is writable by group or others ({m:o})"
        if path.parent.name == "private":
            assert m == 0o600, f"{path} has mode {m:o}"
    assert not mode_of(keys / "keystore.lock") & 0o077
    # ledger.sqlite3 is 0644 inside the 0700 folder (SECURITY.md says 0600: reported); it holds
    # digests, not secrets, and the folder already keeps others out
    assert not mode_of(keys / "keystore.json") & 0o022


def test_every_command_keeps_key_files_private(tmp_path: Path, alg: str, careless_umask: None,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "keys"
    store = tmp_path / "store"
    monkeypatch.setenv("KEY_PASS", "a long and random enough passphrase 7f3a9c")

    def step(*args: str, input: str | None = None) -> str:
        out = cli(keys, *args, input=input)
        check_modes(keys)
        return out

    step("keys", "init", "--alg", alg)
    k2 = json.loads(step("keys", "generate", "--alg", alg, "--json"))["kid"]
    step("keys", "generate", "--alg", "ed25519", "--passphrase-env", "KEY_PASS")
    step("keys", "list")
    step("keys", "promote", k2)
    k3 = json.loads(step("keys", "rotate", "--json"))["kid"]
    step("keys", "retire", k2)
    k4 = json.loads(step("keys", "generate", "--alg", alg, "--json"))["kid"]
    step("keys", "revoke", k4, "--reason", "test", "--yes")
    step("keys", "destroy", k4, "--yes")
    if alg == "ed25519":
        pub = tmp_path / "k3.pub"
        step("keys", "export-public", k3, "-o", str(pub))
        other = tmp_path / "reader-keys"
        cli(other, "keys", "init", "--no-key")
        cli(other, "keys", "import-public", str(pub))
        check_modes(other)
    # store-facing commands over an artifact written through the IO manager
    world = World(tmp_path, alg, keys, __import__(
        "dagster_wandb_secure.core.keys", fromlist=["KeyStore"]).KeyStore.open(keys), store,
        tmp_path / "attacker")
    av = world.write("permitted", {"x": 1})
    check_modes(keys)
    step("verify", str(world.path(av, "output.pickle")), "--artifact", "permitted")
    step("inspect", str(world.path(av, "output.pickle")))
    step("audit", "--store-dir", str(store))
    step("adopt", "--store-dir", str(store), "--scan-only")
    step("resign", "--from", k2, "--store-dir", str(store))
    check_modes(keys)


@pytest.mark.parametrize("what", ["private-file", "private-dir", "store-dir"])
def test_loosened_permissions_are_refused_with_the_fix(world: World, what: str) -> None:
    old = world.ks.primary().kid
    world.write("loose", 0)
    kid = world.ks.rotate()
    private = next((world.keys / "private").glob(f"{kid}.*"))
    target, mode, fix = {
        "private-file": (private, 0o640, "chmod 600"),
        "private-dir": (world.keys / "private", 0o755, "chmod 700"),
        "store-dir": (world.keys, 0o755, "chmod 700"),
    }[what]
    target.chmod(mode)
    err = refused(lambda: world.write("loose", 1), KeyPermissionError, artifact=None,
                  reason="readable by group or others|mode")
    assert f"{fix} {target}" in str(err), str(err)
    # the CLI refuses to sign with it too, with the same fix (exit 3: key store error)
    result = RUNNER.invoke(app, ["resign", "--from", old, "-k", str(world.keys),
                                 "--store-dir", str(world.store_dir)], catch_exceptions=False)
    assert result.exit_code == 3, result.output
    assert fix in result.output
    # and after the fix, everything works again
    target.chmod(stat.S_IMODE(mode) & 0o700 if target.is_dir() else 0o600)
    world.write("loose", 2)
