"""Policy: defaults, checks, and configuration validation."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from dagster_wandb_secure.core.errors import (
    AlgorithmMismatchError,
    ConfigurationError,
    MalformedEnvelopeError,
    ResourceLimitError,
    SerializerNotAllowedError,
    UnsignedPayloadError,
)
from dagster_wandb_secure.core.policy import KNOWN_ALGORITHMS, GiB, Policy
from dagster_wandb_secure.core.serializers import SERIALIZERS, ZipLimits


def test_defaults() -> None:
    p = Policy.default()
    assert p == Policy()
    assert p.allowed_serializers == frozenset(SERIALIZERS)
    assert (
        p.allowed_algorithms == frozenset({"ed25519", "hmac-sha256"}) == frozenset(KNOWN_ALGORITHMS)
    )
    assert p.max_header_bytes == 65536
    assert p.max_payload_bytes == 64 * GiB
    assert p.max_manifest_entries == 100_000 and p.max_files == 100_000
    assert p.allow_unsigned_safe_formats is True and p.require_signature is True
    assert p.zip_limits == ZipLimits(
        max_entries=p.max_zip_entries, max_uncompressed_bytes=p.max_zip_uncompressed_bytes
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.max_files = 1  # type: ignore[misc]
    hash(p)  # frozen and hashable


def test_check_serializer() -> None:
    p = Policy(allowed_serializers=frozenset({"skops", "onnx"}))
    p.check_serializer("skops")
    with pytest.raises(SerializerNotAllowedError) as info:
        p.check_serializer("pickle", artifact="model", key_id="kid-1")
    text = str(info.value)
    assert "'pickle' is not allowed" in text and "onnx, skops" in text
    assert "artifact model" in text and "key id kid-1" in text and "What to do" in text
    for name in ("Pickle", "yaml", "", None, 5):
        with pytest.raises(SerializerNotAllowedError):
            Policy().check_serializer(name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "alg",
    ["none", "NONE", "noNE", "", "ED25519", "HS256", "hmac-sha256 ", "rsa", None, 1, b"ed25519"],
)
def test_check_algorithm_is_an_exact_allow_list(alg: Any) -> None:
    with pytest.raises(AlgorithmMismatchError):
        Policy().check_algorithm(alg, artifact="a", key_id="k")


def test_check_algorithm_respects_a_narrowed_policy() -> None:
    p = Policy.from_config({"allowed_algorithms": ["ed25519"]})
    p.check_algorithm("ed25519")
    with pytest.raises(AlgorithmMismatchError, match="'hmac-sha256' is not allowed"):
        p.check_algorithm("hmac-sha256")


def test_size_checks() -> None:
    p = Policy(max_payload_bytes=100, max_header_bytes=10, max_manifest_entries=3, max_files=2)
    p.check_payload_size(0)
    p.check_payload_size(100)
    with pytest.raises(ResourceLimitError, match="101 bytes exceeds the policy limit of 100"):
        p.check_payload_size(101, artifact="a", key_id="k")
    with pytest.raises(ResourceLimitError):
        p.check_payload_size(1 << 63)
    for bad in (-1, 1.5, "10", None, True):
        with pytest.raises(MalformedEnvelopeError):
            p.check_payload_size(bad)  # type: ignore[arg-type]
    p.check_header_size(10)
    with pytest.raises(ResourceLimitError):
        p.check_header_size(11)
    p.check_manifest_entries(3)
    with pytest.raises(ResourceLimitError, match="entries"):
        p.check_manifest_entries(4)
    p.check_file_count(2)
    with pytest.raises(ResourceLimitError, match="files"):
        p.check_file_count(3)


def test_unsigned_pickle_family_is_never_allowed() -> None:
    lax = Policy(require_signature=False, allow_unsigned_safe_formats=True)
    for name in ("pickle", "dill", "cloudpickle", "joblib"):
        with pytest.raises(UnsignedPayloadError, match="never loaded unsigned"):
            lax.check_unsigned(name, artifact="legacy")


def test_unsigned_safe_formats() -> None:
    p = Policy()
    p.check_unsigned("skops")
    p.check_unsigned("onnx")
    with pytest.raises(UnsignedPayloadError):
        p.check_unsigned("json")
    with pytest.raises(UnsignedPayloadError):
        p.check_unsigned(None)
    strict = Policy(allow_unsigned_safe_formats=False)
    for name in ("skops", "onnx"):
        with pytest.raises(UnsignedPayloadError, match="requires a signature"):
            strict.check_unsigned(name)
    no_onnx = Policy(allowed_serializers=frozenset({"skops"}))
    with pytest.raises(SerializerNotAllowedError):
        no_onnx.check_unsigned("onnx")
    lax = Policy(require_signature=False)
    lax.check_unsigned(None)
    lax.check_unsigned("json")
    with pytest.raises(UnsignedPayloadError, match="unknown format"):
        lax.check_unsigned("yaml")


def test_from_config_round_trip() -> None:
    config = {
        "allowed_serializers": ["skops", "onnx", "json"],
        "allowed_algorithms": ["ed25519"],
        "max_payload_bytes": 1 << 30,
        "allow_unsigned_safe_formats": False,
    }
    p = Policy.from_config(config)
    assert p.allowed_serializers == frozenset({"skops", "onnx", "json"})
    assert p.allowed_algorithms == frozenset({"ed25519"})
    assert p.max_payload_bytes == 1 << 30 and p.allow_unsigned_safe_formats is False
    assert Policy.from_config(p.to_config()) == p
    assert Policy.from_config(None) == Policy.from_config({}) == Policy()


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"allowed_serializer": ["pickle"]}, "unknown policy key 'allowed_serializer'"),
        ({"allow_unsigned_pickle": True}, "unknown policy key 'allow_unsigned_pickle'"),
        ({"allowed_serializers": "pickle"}, "'allowed_serializers' must be a list"),
        ({"allowed_serializers": ["pickle", "yaml"]}, "'allowed_serializers' names unknown"),
        ({"allowed_serializers": []}, "'allowed_serializers' is empty"),
        ({"allowed_serializers": {"pickle": 1}}, "'allowed_serializers' must be a list"),
        ({"allowed_algorithms": ["none"]}, "'allowed_algorithms' names unknown"),
        ({"allowed_algorithms": ["ED25519"]}, "'allowed_algorithms' names unknown"),
        ({"allowed_algorithms": [None]}, "'allowed_algorithms' names unknown"),
        ({"max_payload_bytes": "1GB"}, "'max_payload_bytes' must be a positive integer"),
        ({"max_payload_bytes": 0}, "'max_payload_bytes' must be a positive integer"),
        ({"max_payload_bytes": -5}, "'max_payload_bytes'"),
        ({"max_payload_bytes": True}, "'max_payload_bytes'"),
        ({"max_payload_bytes": 1.5}, "'max_payload_bytes'"),
        ({"max_header_bytes": None}, "'max_header_bytes'"),
        ({"require_signature": "no"}, "'require_signature' must be true or false"),
        ({"allow_unsigned_safe_formats": 1}, "'allow_unsigned_safe_formats'"),
    ],
)
def test_from_config_names_the_bad_key(config: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Policy.from_config(config)
    assert fragment in str(info.value)


@pytest.mark.parametrize("config", [["allowed_serializers"], "pickle", 3])
def test_from_config_needs_a_mapping(config: Any) -> None:
    with pytest.raises(ConfigurationError, match="must be a mapping"):
        Policy.from_config(config)


def test_constructor_validates_too() -> None:
    assert Policy(allowed_serializers=["skops"]).allowed_serializers == frozenset({"skops"})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Policy(allowed_serializers="skops")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Policy(allowed_algorithms=frozenset({"none"}))
    with pytest.raises(ConfigurationError):
        Policy(max_files=0)
