"""Parameters at the edge: a lone surrogate in a string and an over-long integer."""

from __future__ import annotations

from agent.hold import HoldStore
from tests.protocol.conftest import Agent, request


async def test_a_lone_surrogate_is_refused_naming_the_field(agent_server: Agent) -> None:
    # JSON allows "\udcff" (a byte that was not UTF-8, escaped); no journal, SQLite or
    # terminal can take it as UTF-8
    status, env = await request(agent_server, "PUT", "/v1/hold", b'{"reason": "x\\udcff"}')
    assert status == 400
    assert env["error"]["details"]["field"] == "reason"
    assert "lone surrogate" in env["error"]["message"]
    assert HoldStore(agent_server.state_dir).get().active is False
    status, _env = await request(agent_server, "PUT", "/v1/hold", b'{"reason": "\\u00e9t\\u00e9"}')
    assert status == 200  # a real non-ASCII reason is fine


async def test_an_over_long_integer_names_its_bound(agent_server: Agent) -> None:
    status, env = await request(agent_server, "GET", "/v1/jobs/cleanup/runs?limit=" + "9" * 25)
    assert status == 400
    assert env["error"]["details"]["field"] == "limit"
    assert "at most 500" in env["error"]["message"]
