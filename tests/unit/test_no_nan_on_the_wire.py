"""NaN and Infinity are not JSON (RFC 8259): a reply holding one is refused by the
encoder (the server then answers ``internal``), never sent as invalid JSON."""

from __future__ import annotations

import dataclasses
import json

import pytest

from agent.api.envelope import envelope_ok
from agent.host.model import LoadSample
from tests.unit.test_healthcheck_text import sample  # a HostSample as the sampler builds it


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_an_envelope_refuses_a_non_finite_float(value: float) -> None:
    with pytest.raises(ValueError):
        envelope_ok({"figure": value}, "r1")
    body = envelope_ok({"figure": 1.5}, "r1").body
    assert isinstance(body, bytes) and json.loads(body)["data"] == {"figure": 1.5}


def test_a_host_sample_with_nan_refuses_to_encode() -> None:
    good = sample(load=LoadSample(load1=0.5, load5=0.3, load15=0.2, load1_per_core=0.1))
    assert json.loads(good.wire_json)["load"]["load1"] == 0.5
    broken = dataclasses.replace(good, load=dataclasses.replace(good.load, load1=float("nan")))
    with pytest.raises(ValueError):
        _ = broken.wire_json


def test_the_digest_drops_prometheus_nan_and_inf() -> None:
    from agent.jobs.digest_data import _finite, _scalar
    assert [_finite(v) for v in ("NaN", "+Inf", "-Inf", "42.5")] == [None, None, None, 42.5]
    assert _scalar([{"metric": {}, "value": [1.0, "NaN"]}]) is None
    assert _scalar([]) is None


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_a_request_body_with_nan_is_malformed_json(literal: str) -> None:
    from agent.api.envelope import _parse_body
    from agent.errors import BadRequest
    with pytest.raises(BadRequest) as caught:
        _parse_body(f'{{"reason": "x", "n": {literal}}}'.encode())
    assert caught.value.details["field"] == "body"
    assert "not a JSON value" in caught.value.message
