"""Malicious payloads for "nothing executed" proofs. Each, if ever unpickled, creates ``marker``.

They are built by hand-written pickle opcodes or ``__reduce__`` so that the proof does not depend
on any library's behaviour: if a test's marker file exists afterwards, code ran."""

from __future__ import annotations

import os
import pickle
from pathlib import Path


class TouchOnLoad:
    """``__reduce__`` that calls ``os.system("touch <marker>")`` when unpickled (REDUCE)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def reduce_os_system(marker: Path) -> bytes:
    return pickle.dumps(TouchOnLoad(marker), protocol=2)


def dotted_stack_global(marker: Path) -> bytes:
    """STACK_GLOBAL of ``pathlib`` / ``Path.touch`` (a dotted name), then REDUCE."""
    import pickletools  # noqa: F401  (documentation: opcodes below)

    path = str(marker).encode()
    return (
        b"\x80\x04"
        + b"\x8c\x07pathlib\x94"
        + b"\x8c\x04Path\x94"
        + b"\x93\x94"  # STACK_GLOBAL -> pathlib.Path
        + b"\x8c"
        + bytes([len(path)])
        + path
        + b"\x94"
        + b"\x85\x94R\x94"  # TUPLE1, REDUCE -> Path(marker)
        + b"\x8c\x07pathlib\x94\x8c\nPath.touch\x94\x93\x94"  # dotted STACK_GLOBAL
        + b"h\x03\x85\x94R\x94."  # GET 3 (the Path), TUPLE1, REDUCE -> Path.touch(p)
    )


def obj_then_pop(marker: Path) -> bytes:
    """Protocol 0/1 OBJ opcode building os.system(cmd), then POP: the result is discarded."""
    cmd = f"touch {marker}".encode()
    return b"(cos\nsystem\nV" + cmd + b"\no0N."


def nested_loads(marker: Path) -> bytes:
    """A pickle whose REDUCE calls pickle.loads on an inner malicious pickle."""
    inner = reduce_os_system(marker)

    class Nested:
        def __reduce__(self) -> tuple[object, tuple[bytes]]:
            return (pickle.loads, (inner,))

    return pickle.dumps(Nested(), protocol=2)


def importlib_getattr(marker: Path) -> bytes:
    """builtins.getattr(importlib.import_module('os'), 'system')('touch marker')."""
    cmd = f"touch {marker}".encode()
    return b"cbuiltins\ngetattr\n(cimportlib\nimport_module\n(Vos\ntRVsystem\ntR(V" + cmd + b"\ntR."


class EvalOnLoad:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (eval, (f"__import__('pathlib').Path({str(self.marker)!r}).touch()",))


def reduce_eval(marker: Path) -> bytes:
    return pickle.dumps(EvalOnLoad(marker), protocol=2)


ALL_LEGACY_EXPLOITS = {
    "reduce_os_system": reduce_os_system,
    "dotted_stack_global": dotted_stack_global,
    "obj_then_pop": obj_then_pop,
    "nested_loads": nested_loads,
    "importlib_getattr": importlib_getattr,
    "reduce_eval": reduce_eval,
}
