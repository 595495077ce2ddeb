"""The bench's containers: the tests' own Docker engine with 40 running containers, 5 unhealthy.

Every container is a ``--network none`` busybox container (the tests' image,
FROM scratch) running ``sleep 3600`` with a HEALTHCHECK every
``HEALTH_INTERVAL_S`` seconds; the first ``unhealthy`` run ``false`` and turn
unhealthy after one failure, the rest run ``true``.  The unhealthy ones carry
the label ``vm-agent.watchdog=off``: the agent's watchdog inspects them and
decides (an audited skip) on every pass, but never restarts them, so the
fleet stays the same for the whole run.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.integration.dockerd import SECOND_NS, TEST_IMAGE, TestEngine

CONTAINERS, UNHEALTHY = 40, 5
HEALTH_INTERVAL_S = 10  # a HEALTHCHECK every 10 s: 4 execs/s on 2 cores, little noise
OPT_OUT = {"vm-agent.watchdog": "off"}


def healthcheck(command: str) -> dict[str, Any]:
    """Docker's HEALTHCHECK dict: ``CMD command`` every HEALTH_INTERVAL_S s (nanoseconds)."""
    interval = HEALTH_INTERVAL_S * SECOND_NS
    return {"test": ["CMD", command], "interval": interval, "timeout": SECOND_NS,
            "retries": 1, "start_period": 0}


def run_container(engine: TestEngine, index: int, unhealthy: int) -> None:
    """``bench-NN``: healthy, or (index < ``unhealthy``) failing its check and opted out."""
    bad = index < unhealthy
    labels = {"vmagent-test": "1", **(OPT_OUT if bad else {})}
    engine.client().containers.run(
        TEST_IMAGE, ["sleep", "3600"], name=f"bench-{index:02d}", detach=True,
        network_mode="none", healthcheck=healthcheck("false" if bad else "true"),
        labels=labels)


def health_counts(engine: TestEngine) -> tuple[int, int]:
    """(healthy, unhealthy) running containers, as Docker's health filter counts them."""
    api = engine.client().api
    return (len(api.containers(filters={"health": "healthy"})),
            len(api.containers(filters={"health": "unhealthy"})))


def start_engine(stack: contextlib.ExitStack, *, total: int = CONTAINERS,
                 unhealthy: int = UNHEALTHY, timeout_s: float = 120.0) -> TestEngine:
    """A private engine with ``total`` containers, ``unhealthy`` of them unhealthy, settled.

    The engine (and its containers) is stopped by ``stack``.  Raises
    RuntimeError when the health counts have not settled after ``timeout_s``.
    """
    engine = TestEngine()
    stack.callback(engine.stop)
    engine.start()
    engine.build_test_image()
    populate(engine, range(total), unhealthy=unhealthy, timeout_s=timeout_s)
    return engine


def populate(engine: TestEngine, indices: range, *, unhealthy: int,
             timeout_s: float = 120.0) -> None:
    """Run ``bench-NN`` for each index (see :func:`run_container`) and wait until Docker
    counts ``indices.stop - unhealthy`` healthy and ``unhealthy`` unhealthy running
    containers (the fleet is then ``bench-00`` .. ``bench-<stop-1>``).

    Raises RuntimeError when the health counts have not settled after ``timeout_s``.
    """
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: run_container(engine, i, unhealthy), indices))
    deadline = time.monotonic() + timeout_s
    while (counts := health_counts(engine)) != (indices.stop - unhealthy, unhealthy):
        if time.monotonic() > deadline:
            raise RuntimeError(f"containers not settled after {timeout_s:g} s: "
                               f"(healthy, unhealthy) = {counts}")
        time.sleep(0.5)
