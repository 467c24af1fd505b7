"""Header templates per asset shape (issue 16, ``io_manager_ratio_small``): a template's shape
includes the artifact's context, so a run of N assets meets ~4N shapes (payload and manifest,
writer and reader). The caches must hold a whole run's shapes (256, emptied when full, rebuilt
every template of a 200-asset run on every run), a full cache forgets only its oldest template,
and building a template compiles no regular expression (~0.25 ms each)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from dagster_wandb_secure.core import canonical, header_template
from dagster_wandb_secure.core.envelope import seal, unseal, verify_bytes
from dagster_wandb_secure.core.keys import KeyStore

OBJ = {"rows": 3}


def _builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    built: list[int] = []
    init = header_template.HeaderTemplate.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(header_template.HeaderTemplate, "__init__", counting)
    return built


def test_a_second_run_of_300_assets_builds_no_template(
    key_store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    header_template.clear()
    built = _builds(monkeypatch)
    contexts = [{"artifact": f"asset_{i:04d}", "type": "dataset"} for i in range(300)]
    for _run in range(2):
        built.clear()
        for ctx in contexts:
            data = seal(OBJ, key_store=key_store, context=ctx, record=False)
            assert unseal(data, key_store=key_store, expected_context=ctx) == OBJ
    assert built == []  # was 600 (the 256-template caches were emptied twice per run)


def test_a_full_cache_forgets_only_its_oldest_template(
    key_store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(header_template, "MAX_TEMPLATES", 4)
    header_template.clear()
    headers = []
    for i in range(5):
        ctx = {"artifact": f"a{i}"}
        data = seal(OBJ, key_store=key_store, context=ctx, record=False)
        assert unseal(data, key_store=key_store, expected_context=ctx) == OBJ
        headers.append(verify_bytes(data, key_store=key_store)[0].header_bytes)
    known = [header_template.reader_template(h) is not None for h in headers]
    assert known == [False, True, True, True, True]  # was [False] * 4 + [True]
    assert len(header_template._WRITER._map) == 4  # a1..a4 (was: a4 alone, after a clear)


def test_building_a_template_compiles_no_pattern(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[Any] = []
    real = re.compile
    monkeypatch.setattr(re, "compile", lambda *a, **k: compiled.append(a) or real(*a, **k))
    fields = {
        "format": 1, "alg": "ed25519", "kid": "k1", "digest_alg": "sha256",
        "serializer": "json", "serializer_version": 1, "serializer_params": {},
        "context": {"artifact": "fresh-shape-never-seen", "type": "dataset"},
    }
    template = header_template.HeaderTemplate(fields, "payload_sha256")
    assert compiled == []
    header = template.render("ab" * 32, 17, "2001-02-03T04:05:06.000007Z")
    assert template.match(header) == ("ab" * 32, 17, "2001-02-03T04:05:06.000007Z")


@pytest.mark.parametrize(
    "edit",
    [
        lambda h: h + b" ",
        lambda h: b" " + h,
        lambda h: h.replace(b":17,", b":017,"),
        lambda h: h.replace(b":17,", b":" + b"1" * 21 + b","),
        lambda h: h.replace(b":17,", b":-17,"),
        lambda h: h.replace(b":17,", b":,"),
        lambda h: h.replace(b"ab" * 32, b"AB" * 32),
        lambda h: h.replace(b"ab" * 32, b"ab" * 31),
        lambda h: h.replace(b".000007Z", b".00007Z"),
        lambda h: h.replace(b"2001", b"\xd9\xa2001"),
        lambda h: h.replace(b'"dataset"', b'"datasex"'),
        lambda h: h[:-1],
    ],
)
def test_the_matcher_refuses_what_the_strict_form_refuses(edit: Any) -> None:
    fields = {
        "format": 1, "alg": "ed25519", "kid": "k1", "digest_alg": "sha256",
        "serializer": "json", "serializer_version": 1, "serializer_params": {},
        "context": {"artifact": "m", "type": "dataset"},
    }
    template = header_template.HeaderTemplate(fields, "payload_sha256")
    header = template.render("ab" * 32, 17, "2001-02-03T04:05:06.000007Z")
    assert b'"payload_length":17,' in header
    edited = edit(header)
    assert edited != header and template.match(edited) is None
    full = dict(fields, payload_sha256="ab" * 32, payload_length=17,
                signed_at="2001-02-03T04:05:06.000007Z")
    assert canonical.encode_shaped(full) == header
