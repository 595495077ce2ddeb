"""InspectCache against an inspect answer that lands after the event that invalidated it.

The interleaving (each step on the event loop, as in Inventory.containers):
the list call returns; the inspect of container ``a`` is sent; Docker
answers it, then ``docker rename old new`` happens and its ``rename`` event
reaches the agent first (``forget("a")``); the inspect answer is processed
last (``put(raw)``) and holds the old name.  Neither ``State`` nor health
changed, so for up to ``max_age_s`` (60 s) every listing reports ``old``,
and ``GET /v1/containers/new/...`` disagrees with ``GET /v1/containers``.
"""

from __future__ import annotations

from agent.containers.inventory import InspectCache

_ID = "a" * 64


def _inspect(name: str) -> dict[str, object]:
    return {"Id": _ID, "Name": f"/{name}", "State": {"Status": "running"}, "Config": {}}


def _listed(name: str) -> dict[str, object]:
    return {"Id": _ID, "Names": [f"/{name}"], "State": "running", "Status": "Up 5 seconds"}


def test_a_stale_answer_put_after_a_rename_is_not_served() -> None:
    cache = InspectCache()
    cache.follow(connected=True)
    sent_at = cache.epoch     # the inspect is sent...
    stale = _inspect("old")   # ...answered before the rename...
    cache.forget(_ID)         # ...whose event is handled first
    cache.put(stale, sent_at)  # ...and then the answer is stored
    assert cache.get(_listed("new")) is None
    assert cache.get(_listed("old")) is None  # not kept at all: a docker update races alike


def test_a_cached_answer_under_another_name_is_not_served() -> None:
    """Even without the race: a list entry under a new name is inspected again."""
    cache = InspectCache()
    cache.follow(connected=True)
    cache.put(_inspect("old"), cache.epoch)
    assert cache.get(_listed("new")) is None


def test_the_same_container_unchanged_is_served() -> None:
    cache = InspectCache()
    cache.follow(connected=True)
    raw = _inspect("web")
    cache.put(raw, cache.epoch)
    assert cache.get(_listed("web")) is raw
