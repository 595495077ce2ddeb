"""The agent inside the box manages the test engine's real sibling containers.

The box has the engine's API socket at /run/docker.sock (= /var/run/docker.sock,
the agent's default).  A busybox container started by the test outside is
listed by ``vm-agentctl containers`` inside, and one whose HEALTHCHECK fails
is restarted by the agent's watchdog (3 failing checks, then a restart that
the engine shows as a new StartedAt).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.box import SystemdBox, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def siblings(box: SystemdBox) -> Iterator[None]:
    engine = box.engine
    engine.run_healthy("e2e-web")
    engine.run_unhealthy("e2e-sick", retries=1)
    try:
        yield
    finally:
        for name in ("e2e-web", "e2e-sick"):
            engine.client().api.remove_container(name, force=True, v=True)


def _listed(box: SystemdBox) -> dict[str, dict[str, object]]:
    rows = box.json(["vm-agentctl", "--json", "containers"], check=False)
    return {str(r["name"]): r for r in rows}


def test_agent_lists_and_restarts_sibling_containers(box: SystemdBox, siblings: None) -> None:
    engine = box.engine
    engine.wait_health("e2e-web", "healthy", timeout_s=30)
    first_start = engine.client().api.inspect_container("e2e-sick")["State"]["StartedAt"]
    box.run(["vm-agentctl", "health"], check=False)  # the agent runs (socket-activated)

    def web_healthy() -> dict[str, object] | None:
        row = _listed(box).get("e2e-web", {})
        return row if row.get("health") == "healthy" else None

    web = wait_until(web_healthy, timeout_s=30, what="e2e-web listed healthy")
    assert web["state"] == "running"

    def restarted() -> str | None:
        started = engine.client().api.inspect_container("e2e-sick")["State"]["StartedAt"]
        return started if started != first_start else None

    wait_until(restarted, timeout_s=90, what="the agent's watchdog restarting e2e-sick",
               interval_s=1.0)
    entries = wait_until(lambda: box.run(
        ["journalctl", "--no-pager", "-t", "vm-agent", "-o", "json",
         "VMAGENT_ACTION=watchdog.restart", "VMAGENT_CONTAINER=e2e-sick"]).out.splitlines(),
        timeout_s=10, what="the watchdog.restart audit entry")
    restart = json.loads(entries[-1])
    assert restart["VMAGENT_RESULT"] == "ok", restart
    assert int(restart["VMAGENT_FAILING_STREAK"]) >= 3
