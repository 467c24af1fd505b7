"""The serializer registry: round trips, zero-copy properties, strict framing, parameter checks,
skops trusted types and zip guards, ONNX checks, strict JSON."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagster_wandb_secure.core import serializers as S
from dagster_wandb_secure.core.errors import (
    MalformedEnvelopeError,
    ResourceLimitError,
    SecureArtifactError,
    SerializationError,
    SerializerNotAllowedError,
    SerializerUnavailableError,
)
from dagster_wandb_secure.core.serializers import (
    PICKLE_FAMILY,
    SERIALIZERS,
    ZipLimits,
    auto_serializer_name,
    check_zip,
    get_serializer,
    load_unsigned_onnx,
    load_unsigned_skops,
    parse_oob_framing,
)

PICKLERS = ["pickle", "dill", "cloudpickle"]  # the ones with oob-v1 framing
FAMILY = [*PICKLERS, "joblib"]
MiB = 1 << 20


class Point:
    """A module-level class: picklable by reference with every pickle-family serializer."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


class MkdirOnLoad:
    """If this is ever unpickled, ``os.mkdir(marker)`` runs and the marker exists."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def dump(name: str, obj: Any, params: Mapping[str, Any] | None = None) -> tuple[list, dict]:
    ser = get_serializer(name)
    chunks, extra = ser.dump(obj, ser.validate_parameters(params))
    json.dumps(extra)  # signed_extra must be JSON-able
    return chunks, extra


def roundtrip(
    name: str, obj: Any, params: Mapping[str, Any] | None = None
) -> tuple[Any, dict, bytearray]:
    chunks, extra = dump(name, obj, params)
    payload = bytearray(b"".join(chunks))  # what the envelope hands over: a writable buffer
    return get_serializer(name).load(memoryview(payload), extra), extra, payload


def oob_payload(inband: bytes, buffers: list[bytes] = ()) -> bytes:  # type: ignore[assignment]
    """Build an oob-v1 payload by hand, following the documented layout."""
    out = bytearray(struct.pack(">I", len(buffers)))
    for buf in buffers:
        out += struct.pack(">Q", len(buf))
    out += struct.pack(">Q", len(inband)) + inband
    for buf in buffers:
        out += bytes(-len(out) % 64) + buf
    return bytes(out)


def oob_extra(n: int) -> dict[str, Any]:
    return {"framing": "oob-v1", "protocol": 5, "buffers": n}


# --------------------------------------------------------------------------------------------
# registry


def test_registry_describes_every_serializer() -> None:
    assert SERIALIZERS == ("pickle", "dill", "cloudpickle", "joblib", "skops", "onnx", "json")
    assert PICKLE_FAMILY == frozenset({"pickle", "dill", "cloudpickle", "joblib"})
    suffixes = {}
    for name in SERIALIZERS:
        ser = get_serializer(name)
        assert ser.name == name
        assert ser.pickle_family is (name in PICKLE_FAMILY)
        suffixes[name] = ser.file_suffix
        assert isinstance(ser.module_version(), str) and ser.module_version()
        assert get_serializer(name) is ser
    assert suffixes == {name: name for name in SERIALIZERS}
    assert get_serializer("pickle").module_version().endswith(f"protocol-{pickle.HIGHEST_PROTOCOL}")


@pytest.mark.parametrize("name", ["PICKLE", "yaml", "", None, 3, "pickle "])
def test_unknown_serializer_is_refused(name: Any) -> None:
    with pytest.raises(SerializationError, match="unknown serialization module") as info:
        get_serializer(name)
    assert not isinstance(info.value, SerializerUnavailableError)


def test_missing_module_names_the_pip_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(S._INSTANCES, "onnx", raising=False)
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    with pytest.raises(SerializerUnavailableError) as info:
        get_serializer("onnx")
    assert "pip install 'dagster-wandb-secure[onnx]'" in str(info.value)
    monkeypatch.delitem(S._INSTANCES, "dill", raising=False)
    monkeypatch.setitem(sys.modules, "dill", None)
    with pytest.raises(SerializerUnavailableError, match="pip install 'dill'"):
        get_serializer("dill")


def _fresh_python(code: str) -> str:
    """Run ``code`` in a new interpreter (nothing imported by earlier tests); its stdout."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_core_modules_import_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from dagster_wandb_secure.core import serializers, policy\n"
        "serializers.auto_serializer_name(object())\n"
        "p = policy.Policy.default()\n"
        "bad = [m for m in ('dagster', 'wandb', 'sklearn', 'onnx', 'skops', 'dill', 'joblib',\n"
        "       'cloudpickle', 'numpy') if m in sys.modules]\n"
        "print(bad)\n"
    )
    assert _fresh_python(code).strip() == "[]"


# --------------------------------------------------------------------------------------------
# round trips


SMALL = {
    "ints": [1, 2, 3],
    "nested": {"a": (1, 2), "s": {"x", "y"}, "b": b"\x00\xff", "n": None, "f": 1.5},
    "point": Point(3, 4),
    "big_int": 10**50,
    "text": "héllo",
}


@pytest.mark.parametrize("name", FAMILY)
def test_small_objects_round_trip(name: str) -> None:
    out, extra, _ = roundtrip(name, SMALL)
    assert out == SMALL
    assert extra["module_version"] == get_serializer(name).module_version()


@pytest.mark.parametrize("protocol", [2, 3, 4])
@pytest.mark.parametrize("name", FAMILY)
def test_older_protocols_round_trip_in_band(name: str, protocol: int) -> None:
    arr = np.arange(50_000, dtype=np.int32)
    out, extra, _ = roundtrip(name, {"v": SMALL, "a": arr}, {"protocol": protocol})
    assert out["v"] == SMALL and np.array_equal(out["a"], arr)
    assert extra["protocol"] == protocol
    if name in PICKLERS:
        assert extra["framing"] == "inband"


def _arrays() -> dict[str, np.ndarray]:
    base = np.arange(300_000, dtype=np.float64).reshape(600, 500)
    ro = np.arange(100_000, dtype=np.int64)
    ro.setflags(write=False)
    return {
        "c": base,
        "f": np.asfortranarray(base),
        "strided": base[::2, ::3],
        "readonly": ro,
        "small": np.array([1, 2, 3], dtype=np.uint8),
        "scalar": np.array(7.5),
        "empty": np.zeros((0, 4)),
        "objects": np.array([Point(1, 2), "x", None], dtype=object),
        "structured": np.zeros(20_000, dtype=[("a", "<i4"), ("b", "<f8")]),
        "big_endian": np.arange(20_000, dtype=">i8"),
    }


@pytest.mark.parametrize("name", FAMILY)
def test_numpy_arrays_round_trip(name: str) -> None:
    arrays = _arrays()
    out, _, _ = roundtrip(name, arrays)
    for key, arr in arrays.items():
        got = out[key]
        if name == "joblib" and key == "big_endian":  # joblib.load converts to native order
            arr = arr.astype(arr.dtype.newbyteorder("="))
        assert got.dtype == arr.dtype and got.shape == arr.shape, key
        assert np.array_equal(got, arr), key
        if key == "f":
            assert got.flags.f_contiguous
    assert out["c"].flags.writeable


@pytest.mark.parametrize("name", PICKLERS)
def test_loaded_arrays_alias_the_payload_memory(name: str) -> None:
    arr = np.random.default_rng(0).random(2 * MiB)  # 16 MiB
    ro = np.arange(MiB, dtype=np.int64)
    ro.setflags(write=False)
    out, extra, payload = roundtrip(
        name, {"a": arr, "f": np.asfortranarray(arr.reshape(1024, -1)), "ro": ro}
    )
    assert extra["framing"] == "oob-v1" and extra["buffers"] == 3
    whole = np.frombuffer(payload, dtype=np.uint8)
    for key in ("a", "f", "ro"):
        assert np.shares_memory(out[key], whole), f"{key} was copied"
    assert out["a"].flags.writeable and out["f"].flags.writeable
    assert not out["ro"].flags.writeable  # read-only when dumped: read-only when loaded
    assert out["a"].ctypes.data % 16 == 0  # buffers are 64-aligned within the payload
    before = bytes(payload)
    out["a"][0] = -1.0  # writes land in the payload buffer itself
    assert bytes(payload) != before
    assert np.array_equal(out["a"][1:], arr[1:])


def test_dill_supports_out_of_band_buffers() -> None:
    """dill's Pickler passes buffer_callback through; its own numpy reducer would copy, so the
    registry routes plain ndarrays to numpy's protocol-5 reduction."""
    arr = np.arange(MiB, dtype=np.int64)
    chunks, extra = dump("dill", {"a": arr, "f": lambda x: x * 2})
    assert extra["framing"] == "oob-v1" and extra["buffers"] == 1
    assert any(np.shares_memory(np.frombuffer(c, np.uint8), arr) for c in chunks if len(c))


@pytest.mark.parametrize("name", PICKLERS)
def test_dump_references_array_memory(name: str) -> None:
    arr = np.ones(4 * MiB, dtype=np.float32)
    chunks, _ = dump(name, arr)
    views = [c for c in chunks if isinstance(c, memoryview)]
    assert any(np.shares_memory(np.frombuffer(v, np.uint8), arr) for v in views)
    assert sum(len(c) for c in chunks) < arr.nbytes + 4096  # no second copy anywhere


@pytest.mark.parametrize("protocol", [4, 5])
@pytest.mark.parametrize("name", PICKLERS)
def test_in_band_bytes_are_referenced_not_copied(name: str, protocol: int) -> None:
    big = b"x" * (64 * MiB)
    chunks, extra = dump(name, {"blob": big, "x": 1}, {"protocol": protocol})
    assert any(isinstance(c, memoryview) and c.obj is big for c in chunks)
    for chunk in chunks:
        assert isinstance(chunk, bytes | bytearray) or (chunk.format == "B" and chunk.ndim == 1)
    payload = b"".join(chunks)
    chunks.clear()
    assert get_serializer(name).load(memoryview(payload), extra)["blob"] == big


def test_many_small_buffers_stay_in_band() -> None:
    arrays = [np.arange(10) for _ in range(2000)]
    out, extra, _ = roundtrip("pickle", arrays)
    assert extra["buffers"] == 0
    assert all(np.array_equal(a, b) for a, b in zip(out, arrays))


@pytest.mark.parametrize("name", ["dill", "cloudpickle"])
def test_lambdas_and_closures_round_trip(name: str) -> None:
    k = 10
    out, _, _ = roundtrip(name, {"f": lambda x: x + k, "g": lambda: "hi"})
    assert out["f"](1) == 11 and out["g"]() == "hi"


def test_plain_pickle_refuses_a_lambda_with_a_typed_error() -> None:
    with pytest.raises(SerializationError) as info:
        dump("pickle", lambda x: x)
    text = str(info.value)
    assert "pickle could not serialize" in text and "dill" in text and "cloudpickle" in text
    assert isinstance(info.value.__cause__, pickle.PicklingError | AttributeError)


def test_joblib_pickles_a_lambda_by_value_and_says_so() -> None:
    # In a fresh interpreter, so nothing imported earlier (dill) changes joblib's pickler.
    code = (
        "from dagster_wandb_secure.core.serializers import get_serializer\n"
        "ser = get_serializer('joblib')\n"
        "chunks, extra = ser.dump(lambda x, y: x + y, ser.validate_parameters(None))\n"
        "fn = ser.load(memoryview(b''.join(bytes(c) for c in chunks)), extra)\n"
        "print(extra.get('by_value'), fn(1, 2))\n"
    )
    assert _fresh_python(code).split() == ["cloudpickle", "3"]


def test_joblib_unpicklable_object_is_still_a_typed_error() -> None:
    with pytest.raises(SerializationError, match="joblib could not serialize"):
        dump("joblib", {"generator": (x for x in range(3))})


def test_unpicklable_object_is_a_typed_error() -> None:
    with pytest.raises(SerializationError, match="cloudpickle could not serialize"):
        dump("cloudpickle", {"lock": __import__("threading").Lock()})


@pytest.mark.parametrize("compress", [True, 3, "gzip", ["lzma", 1], ("bz2", 9), 0, False])
def test_joblib_compression_round_trips(compress: Any) -> None:
    arr = np.arange(200_000)
    out, extra, payload = roundtrip("joblib", {"a": arr, "p": Point(1, 2)}, {"compress": compress})
    assert np.array_equal(out["a"], arr) and out["p"] == Point(1, 2)
    assert extra["compress"] == (list(compress) if isinstance(compress, tuple) else compress)
    if compress not in (0, False):
        assert len(payload) < arr.nbytes / 2


def test_joblib_load_is_lazy_over_the_payload() -> None:
    """joblib reads through a file object over the payload view: the payload is not copied
    up front (a read-only bytes payload works too)."""
    chunks, extra = dump("joblib", np.arange(10))
    out = get_serializer("joblib").load(memoryview(b"".join(chunks)), extra)
    assert out.tolist() == list(range(10))


# --------------------------------------------------------------------------------------------
# oob-v1 framing strictness: garbage is never unpickled


def _corruptions(inband: bytes) -> list[tuple[str, bytes, dict[str, Any]]]:
    good = oob_payload(inband)
    one = oob_payload(inband, [b"\x01" * 100])
    bad_pad = bytearray(one)
    bad_pad[12 + 8 + len(inband)] = 1  # first padding byte
    return [
        ("truncated", good[:-1], oob_extra(0)),
        ("extended", good + b"\x00", oob_extra(0)),
        ("extended by a second pickle", good + pickle.dumps(1), oob_extra(0)),
        ("count differs from signed header", good, oob_extra(1)),
        ("count in framing differs", one, oob_extra(0)),
        ("huge count", struct.pack(">I", 0xFFFFFFFF) + good[4:], oob_extra(0)),
        ("huge count signed", struct.pack(">I", 2_000_000) + good[4:], oob_extra(2_000_000)),
        (
            "inband length too large",
            good[:4] + struct.pack(">Q", len(inband) + 1) + good[12:],
            oob_extra(0),
        ),
        ("inband length 2**63", good[:4] + struct.pack(">Q", 1 << 63) + good[12:], oob_extra(0)),
        ("buffer length too large", one[:4] + struct.pack(">Q", 101) + one[12:], oob_extra(1)),
        ("buffer length too small", one[:4] + struct.pack(">Q", 99) + one[12:], oob_extra(1)),
        ("non-zero padding", bytes(bad_pad), oob_extra(1)),
        ("shorter than the header", good[:7], oob_extra(0)),
        ("empty", b"", oob_extra(0)),
        ("unknown framing", good, {"framing": "oob-v2", "protocol": 5, "buffers": 0}),
        ("no framing", good, {"protocol": 5, "buffers": 0}),
        ("protocol 4 with oob", good, {"framing": "oob-v1", "protocol": 4, "buffers": 0}),
        ("buffer count as string", good, {"framing": "oob-v1", "protocol": 5, "buffers": "0"}),
        ("buffer count as bool", good, {"framing": "oob-v1", "protocol": 5, "buffers": False}),
    ]


@pytest.mark.parametrize("name", PICKLERS)
def test_framing_is_checked_before_anything_is_unpickled(
    name: str, marker: Path, tmp_path: Path
) -> None:
    ser = get_serializer(name)
    # positive control: the same in-band stream, framed correctly, does run
    control = tmp_path / "control"
    ser.load(memoryview(oob_payload(pickle.dumps(MkdirOnLoad(control), protocol=5))), oob_extra(0))
    assert control.exists()

    inband = pickle.dumps(MkdirOnLoad(marker), protocol=5)
    for label, payload, extra in _corruptions(inband):
        with pytest.raises(MalformedEnvelopeError):
            ser.load(memoryview(payload), extra)
        assert not marker.exists(), label


@pytest.mark.parametrize("name", PICKLERS)
def test_signed_extra_must_be_a_mapping(name: str, marker: Path) -> None:
    payload = oob_payload(pickle.dumps(MkdirOnLoad(marker), protocol=5))
    for extra in (None, [], "oob-v1", 5):
        with pytest.raises(MalformedEnvelopeError):
            get_serializer(name).load(memoryview(payload), extra)  # type: ignore[arg-type]
    assert not marker.exists()


@pytest.mark.parametrize("name", PICKLERS)
def test_bytes_after_stop_are_refused(name: str) -> None:
    ser = get_serializer(name)
    stream = pickle.dumps({"x": 1}, protocol=4) + b"junk"
    with pytest.raises(MalformedEnvelopeError, match="follow the pickle stream"):
        ser.load(memoryview(stream), {"framing": "inband", "protocol": 4})
    stream5 = pickle.dumps({"x": 1}, protocol=5) + b"j"
    with pytest.raises(MalformedEnvelopeError, match="follow the pickle stream"):
        ser.load(memoryview(oob_payload(stream5)), oob_extra(0))


def test_unused_out_of_band_buffers_are_refused() -> None:
    payload = oob_payload(pickle.dumps([1, 2], protocol=5), [b"\x00" * 10])
    with pytest.raises(MalformedEnvelopeError, match="used 0 of 1"):
        get_serializer("pickle").load(memoryview(payload), oob_extra(1))


def test_handmade_oob_payload_loads_zero_copy() -> None:
    arr = np.arange(100_000, dtype=np.int64)
    buffers: list[pickle.PickleBuffer] = []
    inband = pickle.dumps(arr, protocol=5, buffer_callback=buffers.append)
    payload = bytearray(oob_payload(inband, [bytes(b.raw()) for b in buffers]))
    out = get_serializer("pickle").load(memoryview(payload), oob_extra(1))
    assert np.array_equal(out, arr) and np.shares_memory(out, np.frombuffer(payload, np.uint8))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300), expected=st.integers(0, 3))
def test_framing_parser_fails_only_with_value_error(data: bytes, expected: int) -> None:
    try:
        inband, buffers = parse_oob_framing(memoryview(data), expected)
    except ValueError:
        return
    assert len(buffers) == expected
    assert len(inband) + sum(len(b) for b in buffers) <= len(data)


@settings(max_examples=100, deadline=None)
@given(
    inband=st.binary(max_size=200),
    buffers=st.lists(st.binary(max_size=200), max_size=4),
)
def test_framing_parser_inverts_the_layout(inband: bytes, buffers: list[bytes]) -> None:
    got_inband, got_buffers = parse_oob_framing(
        memoryview(oob_payload(inband, buffers)), len(buffers)
    )
    assert bytes(got_inband) == inband and [bytes(b) for b in got_buffers] == buffers


def test_verified_but_undecodable_payload_names_the_version_skew() -> None:
    payload = oob_payload(b"\x80\x05garbage")
    extra = {**oob_extra(0), "module_version": "0.0.1"}
    with pytest.raises(SerializationError) as info:
        get_serializer("dill").load(memoryview(payload), extra, artifact="model", key_id="k1")
    text = str(info.value)
    assert "signed by a trusted key" in text and "written with dill 0.0.1" in text
    assert "artifact model" in text and "key id k1" in text
    assert not isinstance(info.value, MalformedEnvelopeError)


# --------------------------------------------------------------------------------------------
# parameters


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("pickle", None, {"protocol": pickle.HIGHEST_PROTOCOL}),
        ("pickle", {"protocol": 2}, {"protocol": 2}),
        ("cloudpickle", {"protocol": None}, {"protocol": pickle.HIGHEST_PROTOCOL}),
        ("dill", {"recurse": True}, {"protocol": 5, "byref": False, "recurse": True}),
        ("joblib", {"compress": ("zlib", 3)}, {"compress": ["zlib", 3], "protocol": 5}),
        ("joblib", {"compress": True, "protocol": 4}, {"compress": True, "protocol": 4}),
        (
            "skops",
            {"compression": "deflated", "compresslevel": 6},
            {"compression": zipfile.ZIP_DEFLATED, "compresslevel": 6},
        ),
        ("skops", {}, {"compression": zipfile.ZIP_STORED, "compresslevel": None}),
        ("onnx", {}, {}),
        ("json", None, {}),
    ],
)
def test_parameters_are_normalized(name: str, params: Any, expected: dict[str, Any]) -> None:
    got = get_serializer(name).validate_parameters(params)
    assert got == expected
    assert json.loads(json.dumps(got)) == got  # JSON-able and stable
    assert get_serializer(name).validate_parameters(got) == got  # idempotent


@pytest.mark.parametrize(
    ("name", "params", "fragment"),
    [
        ("pickle", {"protocol": 1}, "'protocol'"),
        ("pickle", {"protocol": 6}, "'protocol'"),
        ("pickle", {"protocol": True}, "'protocol'"),
        ("pickle", {"protocol": "5"}, "'protocol'"),
        ("pickle", {"file": "/tmp/x"}, "'file'"),
        ("pickle", {"fix_imports": True}, "'fix_imports'"),
        ("pickle", {"buffer_callback": print}, "'buffer_callback'"),
        ("pickle", {"buffers": []}, "'buffers'"),
        ("pickle", {"encoding": "latin1"}, "'encoding'"),
        ("pickle", {"colour": "red"}, "'colour' is unknown (allowed: protocol)"),
        ("pickle", {1: 2}, "not a string"),
        ("dill", {"byref": 1}, "'byref'"),
        ("dill", {"fmode": 1}, "'fmode'"),
        ("dill", {"ignore": True}, "'ignore'"),
        ("cloudpickle", {"buffer_callback": None}, "'buffer_callback'"),
        ("joblib", {"compress": 10}, "'compress'"),
        ("joblib", {"compress": -1}, "'compress'"),
        ("joblib", {"compress": 1.5}, "'compress'"),
        ("joblib", {"compress": ("zstd", 3)}, "zstd"),
        ("joblib", {"compress": ("zlib", "3")}, "'compress'"),
        ("joblib", {"compress": ("zlib", 3, 4)}, "'compress'"),
        ("joblib", {"compress": "rot13"}, "rot13"),
        ("joblib", {"filename": "x.pkl"}, "'filename'"),
        ("joblib", {"mmap_mode": "r"}, "'mmap_mode'"),
        ("skops", {"compression": "zstd"}, "'compression'"),
        ("skops", {"trusted": ["os.system"]}, "'trusted'"),
        ("skops", {"compresslevel": 11}, "'compresslevel'"),
        ("json", {"indent": 2}, "'indent'"),
        ("onnx", {"external_data": True}, "'external_data'"),
    ],
)
def test_bad_parameters_are_refused_by_name(name: str, params: Any, fragment: str) -> None:
    with pytest.raises(SerializationError) as info:
        get_serializer(name).validate_parameters(params, artifact="my-asset")
    text = str(info.value)
    assert fragment in text and f"serializer {name!r}" in text and "my-asset" in text
    assert "What to do" in text


@pytest.mark.parametrize("params", [[("protocol", 5)], "protocol=5", 5])
def test_parameters_must_be_a_mapping(params: Any) -> None:
    with pytest.raises(SerializationError, match="must be a mapping"):
        get_serializer("pickle").validate_parameters(params)


def test_dump_validates_parameters_itself() -> None:
    with pytest.raises(SerializationError, match="'buffer_callback'"):
        get_serializer("pickle").dump(1, {"buffer_callback": print})


# --------------------------------------------------------------------------------------------
# skops


@pytest.fixture(scope="module")
def sk_models() -> dict[str, Any]:
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.random((60, 4))
    y = (x[:, 0] > 0.5).astype(int)
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y)
    pipe = make_pipeline(StandardScaler(), PCA(2), LogisticRegression()).fit(x, y)
    return {"x": x, "forest": forest, "pipe": pipe}


def test_skops_records_the_trusted_types_it_needs(sk_models: dict[str, Any]) -> None:
    forest = sk_models["forest"]
    out, extra, payload = roundtrip("skops", forest)
    assert extra["trusted_types"] == ["sklearn.tree._tree.Tree"]
    assert bytes(payload[:4]) == b"PK\x03\x04"
    assert (out.predict(sk_models["x"]) == forest.predict(sk_models["x"])).all()

    out, extra, _ = roundtrip("skops", sk_models["pipe"], {"compression": "deflated"})
    assert extra["trusted_types"] == []
    assert (out.predict(sk_models["x"]) == sk_models["pipe"].predict(sk_models["x"])).all()


def test_skops_load_trusts_exactly_the_signed_list(sk_models: dict[str, Any]) -> None:
    chunks, extra = dump("skops", sk_models["forest"])
    ser = get_serializer("skops")
    with pytest.raises(SerializationError, match="sklearn.tree._tree.Tree"):
        ser.load(memoryview(b"".join(chunks)), {**extra, "trusted_types": []})
    for bad in (None, "sklearn.tree._tree.Tree", [1], [""]):
        with pytest.raises(MalformedEnvelopeError, match="trusted_types"):
            ser.load(memoryview(b"".join(chunks)), {**extra, "trusted_types": bad})


def test_unsigned_skops_loads_default_types_only(sk_models: dict[str, Any]) -> None:
    pipe_bytes = b"".join(dump("skops", sk_models["pipe"])[0])
    assert type(load_unsigned_skops(pipe_bytes)) is type(sk_models["pipe"])
    forest_bytes = b"".join(dump("skops", sk_models["forest"])[0])
    with pytest.raises(SerializerNotAllowedError) as info:
        load_unsigned_skops(forest_bytes, artifact="forest")
    assert "sklearn.tree._tree.Tree" in str(info.value) and "forest" in str(info.value)


def test_unsigned_non_zip_never_falls_back(marker: Path) -> None:
    for data in (pickle.dumps(MkdirOnLoad(marker)), b"", b"PK", b"\x1f\x8b" + b"0" * 40):
        with pytest.raises(MalformedEnvelopeError, match="zip"):
            load_unsigned_skops(data)
    assert not marker.exists()


def _zip(entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(buf, "w", compression=method) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return buf.getvalue()


def test_zip_with_duplicate_entries_is_refused() -> None:
    data = _zip([("schema.json", b"{}"), ("schema.json", b'{"evil": 1}')])
    with pytest.raises(MalformedEnvelopeError, match="duplicate entry names"):
        check_zip(data)
    with pytest.raises(MalformedEnvelopeError, match="duplicate"):
        load_unsigned_skops(data)
    with pytest.raises(MalformedEnvelopeError, match="duplicate"):
        get_serializer("skops").load(memoryview(data), {"trusted_types": []})


def test_zip_with_bad_crc_is_refused(sk_models: dict[str, Any]) -> None:
    data = bytearray(_zip([("schema.json", b"A" * 100), ("x.npy", b"B" * 50)]))
    data[data.index(b"A" * 100) + 7] ^= 0x01
    with pytest.raises(MalformedEnvelopeError, match="CRC|cannot be read"):
        check_zip(data)
    # a real skops file, one bit flipped inside an entry
    real = bytearray(b"".join(dump("skops", sk_models["pipe"])[0]))
    info = zipfile.ZipFile(io.BytesIO(bytes(real))).getinfo("schema.json")
    name_len, extra_len = struct.unpack_from("<HH", real, info.header_offset + 26)
    real[info.header_offset + 30 + name_len + extra_len + 5] ^= 0x01  # inside the entry data
    with pytest.raises(MalformedEnvelopeError):
        load_unsigned_skops(bytes(real))


def test_zip_bombs_are_refused_by_limits() -> None:
    many = _zip([(f"{i}.npy", b"") for i in range(50)])
    with pytest.raises(ResourceLimitError, match="more than 10 entries"):
        check_zip(many, limits=ZipLimits(max_entries=10))
    check_zip(many, limits=ZipLimits(max_entries=50))
    bomb = _zip([("a.npy", b"\x00" * (4 * MiB))], method=zipfile.ZIP_DEFLATED)
    assert len(bomb) < 64 * 1024
    with pytest.raises(ResourceLimitError, match="expand to"):
        check_zip(bomb, limits=ZipLimits(max_uncompressed_bytes=MiB))
    with pytest.raises(ResourceLimitError):
        load_unsigned_skops(bomb, limits=ZipLimits(max_uncompressed_bytes=MiB))
    with pytest.raises(ResourceLimitError):
        get_serializer("skops").load(
            memoryview(bomb), {"trusted_types": []}, zip_limits=ZipLimits(max_entries=0)
        )


def test_zip_structure_is_strict() -> None:
    good = _zip([("schema.json", b"{}")])
    check_zip(good)
    cases = {
        "trailing bytes": good + b"x",
        "leading bytes": b"x" + good,
        "no end record": good[:-22],
        "truncated": good[: len(good) // 2],
    }
    for label, data in cases.items():
        with pytest.raises(MalformedEnvelopeError):
            check_zip(data)
        assert label


# --------------------------------------------------------------------------------------------
# onnx


def _onnx_model(valid: bool = True) -> Any:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [2], [1.0, 2.0])
    node = helper.make_node("Add", ["x", "bias" if valid else "missing"], ["z"])
    graph = helper.make_graph([node], "g", [x], [z], initializer=[bias])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_round_trip_and_checker() -> None:
    from onnx.reference import ReferenceEvaluator

    model = _onnx_model()
    out, extra, _ = roundtrip("onnx", model)
    assert out == model and extra == {"module_version": get_serializer("onnx").module_version()}
    (z,) = ReferenceEvaluator(out).run(None, {"x": np.array([1.0, 1.0], dtype=np.float32)})
    assert z.tolist() == [2.0, 3.0]
    # bytes that parse as a ModelProto are accepted too
    out2, _, _ = roundtrip("onnx", model.SerializeToString())
    assert out2 == model
    assert auto_serializer_name(model) == "onnx"


def test_onnx_checker_failure_is_a_typed_error() -> None:
    bad = _onnx_model(valid=False)
    with pytest.raises(SerializationError, match="ValidationError"):
        dump("onnx", bad)
    with pytest.raises(SerializationError, match="signed by a trusted key"):
        get_serializer("onnx").load(memoryview(bad.SerializeToString()), {})
    with pytest.raises(SerializationError, match="onnx.ModelProto"):
        dump("onnx", {"not": "a model"})
    with pytest.raises(MalformedEnvelopeError, match="not a valid model"):
        load_unsigned_onnx(b"\xff\xfe garbage")
    assert load_unsigned_onnx(_onnx_model().SerializeToString()) == _onnx_model()


def test_onnx_external_data_is_refused() -> None:
    from onnx import TensorProto

    model = _onnx_model()
    tensor = model.graph.initializer[0]
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    with pytest.raises(SerializationError, match="external data"):
        dump("onnx", model)
    with pytest.raises(MalformedEnvelopeError, match="external data"):
        load_unsigned_onnx(model.SerializeToString())


def test_sklearn_model_converted_to_onnx_round_trips(sk_models: dict[str, Any]) -> None:
    from skl2onnx import to_onnx

    model = to_onnx(sk_models["pipe"], sk_models["x"][:1].astype(np.float32))
    out, _, _ = roundtrip("onnx", model)
    assert out == model


# --------------------------------------------------------------------------------------------
# json


def test_json_is_canonical_and_round_trips() -> None:
    value = {"b": [1, 2.5, None, True, "é"], "a": {"z": {}, "y": []}}
    out, extra, payload = roundtrip("json", value)
    assert out == value
    assert bytes(payload) == '{"a":{"y":[],"z":{}},"b":[1,2.5,null,true,"é"]}'.encode()


@pytest.mark.parametrize(
    "value",
    [float("nan"), [float("inf")], (1, 2), {1: "x"}, {"s": {1, 2}}, b"x", Point(1, 2), np.int64(3)],
)
def test_json_dump_refuses_non_json_data(value: Any) -> None:
    with pytest.raises(SerializationError, match="json could not serialize"):
        dump("json", value)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"a":1,"a":2}',
        b"NaN",
        b'{"x":Infinity}',
        b"\xff",
        b"\xef\xbb\xbf{}",
        b"{",
        b"[1] 2",
        b"9" * 5000,
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_json_load_is_strict(payload: bytes) -> None:
    with pytest.raises(SerializationError):
        get_serializer("json").load(memoryview(payload), {})


def test_json_nesting_is_bounded() -> None:
    value: Any = []
    for _ in range(200):
        value = [value]
    with pytest.raises(SerializationError, match="nested deeper"):
        dump("json", value)


# --------------------------------------------------------------------------------------------
# auto selection


def test_auto_serializer_name(sk_models: dict[str, Any]) -> None:
    assert auto_serializer_name(sk_models["forest"]) == "skops"
    assert auto_serializer_name(sk_models["pipe"]) == "skops"
    assert auto_serializer_name([1, 2]) == "pickle"
    assert auto_serializer_name(np.arange(3)) == "pickle"
    assert auto_serializer_name(_onnx_model()) == "onnx"


def test_every_error_is_typed() -> None:
    """A sweep over garbage: every serializer answers garbage with one of our typed errors."""
    for name in SERIALIZERS:
        ser = get_serializer(name)
        for garbage in (b"", b"\x00" * 64, b"\x80\x05K\x01.", b"PK\x03\x04" + b"\x00" * 30):
            try:
                ser.load(
                    memoryview(garbage), {"framing": "inband", "protocol": 5, "trusted_types": []}
                )
            except SecureArtifactError:
                pass
