"""The CLI commands shown in the README, examples/README.md and docs/ (key management,
deployment) name commands and options that exist: each is checked against the command's own
``--help``, so the documentation cannot silently drift from the CLI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dagster_wandb_secure.cli import app

REPO = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "examples/README.md", "docs/key-management.md", "docs/deployment.md"]
PROGRAM = re.compile(r"(?:^|\s)(?:\S*/)?dagster-wandb-secure\s")


def documented_commands() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for doc in DOCS:
        in_block = False
        for line in (REPO / doc).read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith("```"):
                in_block = not in_block and stripped in {"```sh", "```bash", "```console"}
                continue
            if in_block and PROGRAM.search(stripped):
                command = stripped.split("#", 1)[0].strip()
                found.append((doc, command[PROGRAM.search(command).end():]))
    return found


COMMANDS = documented_commands()


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS) >= 25


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[c for _, c in COMMANDS])
def test_documented_command_and_options_exist(doc: str, command: str) -> None:
    words = shlex.split(command)
    path: list[str] = []
    runner = CliRunner()
    help_text = runner.invoke(app, ["--help"]).output
    for word in words:  # descend while the word is a (sub)command
        if word.startswith("-"):
            break
        result = runner.invoke(app, [*path, word, "--help"])
        if result.exit_code != 0:
            break
        path.append(word)
        help_text = result.output
    assert path, f"{doc}: no command in {command!r}"
    for word in words:
        if word.startswith("--"):
            option = word.split("=", 1)[0]
            assert option in help_text, f"{doc}: {' '.join(path)} has no option {option}"
