"""A fork generation: how many ``fork()`` calls lie between this process and the one that
imported this module, so hot paths tell "inherited across fork" without an ``os.getpid()``
system call per operation.

``GENERATION[0]`` starts at 0 and is incremented in every forked child by an
``os.register_at_fork`` hook, before any other Python code of the child runs. An object records
the generation it was made (or its connection opened) in, and compares it: a different value
means this object came from a parent process. This is the same mechanism the SQLite fork safety
already relies on (``sqlite_fork._pin_inherited``), and it sees every fork CPython knows of:
``os.fork``, ``os.forkpty``, ``multiprocessing``, ``subprocess`` with a ``preexec_fn`` (they all
run ``PyOS_AfterFork_Child``). A C extension forking and running Python in the child without
that call breaks CPython's own state (threads, locks) as well and is not supported.

A module attribute read and a subscript cost ~30 ns; ``os.getpid()`` ~180 ns here (a real
system call on this kernel).
"""

from __future__ import annotations

import os

__all__ = ["GENERATION"]

GENERATION = [0]


def _after_fork_in_child() -> None:
    GENERATION[0] += 1


os.register_at_fork(after_in_child=_after_fork_in_child)
