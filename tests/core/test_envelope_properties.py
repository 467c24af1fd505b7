"""Property tests: any mutation of a valid envelope ends in the original object or a typed error,
and the deserializer only ever sees bytes whose digest a trusted key signed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagster_wandb_secure.core import envelope
from dagster_wandb_secure.core.digests import digest_bytes
from dagster_wandb_secure.core.envelope import seal, unseal
from dagster_wandb_secure.core.errors import SecureArtifactError
from dagster_wandb_secure.core.keys import KeyStore
from kit import payloads

CTX = {"artifact": "fuzzed", "type": "dataset", "partition": None, "asset_key": "fuzzed"}
ORIGINAL = {"numbers": list(range(50)), "text": "hello"}


@pytest.fixture(scope="module", params=["ed25519", "hmac-sha256"])
def material(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    ks = KeyStore.open(tmp_path_factory.mktemp("fuzz") / "keys")
    ks.generate(request.param)
    marker = tmp_path_factory.mktemp("marker") / "PWNED"
    good = seal(ORIGINAL, key_store=ks, context=CTX, record=False)
    # signed by the same key but for another artifact: splicing it in must never load it
    other = seal(
        payloads.TouchOnLoad(marker),
        key_store=ks,
        context={**CTX, "artifact": "other"},
        record=False,
    )
    return ks, good, other, marker


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("splice"), st.integers(0, 10**6), st.integers(0, 10**6)),
    st.tuples(st.just("overwrite"), st.integers(0, 10**6), st.binary(min_size=1, max_size=16)),
)


def apply(data: bytes, other: bytes, m: tuple) -> bytes:
    kind = m[0]
    if not data:
        return data + (m[1] if kind == "extend" else b"")
    if kind == "flip":
        i = m[1] % len(data)
        out = bytearray(data)
        out[i] ^= 1 << m[2]
        return bytes(out)
    if kind == "truncate":
        return data[: m[1] % len(data)]
    if kind == "extend":
        return data + m[1]
    if kind == "splice":
        return data[: m[1] % len(data)] + other[m[2] % len(other) :]
    i = m[1] % len(data)
    return data[:i] + m[2] + data[i + len(m[2]) :]


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutations=st.lists(mutation, min_size=1, max_size=3))
def test_mutations_end_in_original_or_typed_error(material, mutations) -> None:
    ks, good, other, marker = material
    data = good
    for m in mutations:
        data = apply(data, other, m)
    seen: list[bytes] = []
    real = envelope._deserialize

    def spy(header, payload, policy):
        assert header.verified
        assert digest_bytes(header.digest_alg, payload) == header.payload_digest
        seen.append(bytes(payload))
        return real(header, payload, policy)

    envelope._deserialize = spy
    try:
        try:
            result = unseal(data, key_store=ks, expected_context=CTX)
        except SecureArtifactError:
            pass
        else:
            assert result == ORIGINAL
    finally:
        envelope._deserialize = real
    assert not Path(marker).exists()
