"""Helpers shared by the test suites, imported absolutely from the tests root (pytest's
``pythonpath = ["tests"]``): ``from kit import payloads``, ``from kit.adversarial import World``.

The convention of this tree: test folders (``tests/core``, ``tests/dagster``, ...) are plain
folders, never packages (``tests/dagster`` and ``tests/examples`` would otherwise shadow the
real ``dagster`` and the repository's ``examples`` package), so every ``test_*.py`` basename is
unique across ``tests/``; a folder's ``conftest.py`` holds only fixtures, and code a test file
imports lives here."""
