"""Prometheus HTTP API client and the agent's named trend queries.

Only the queries in :func:`trend_queries` are ever sent: a client names a
*kind* and a *range*, never PromQL.  Label values inside the queries come
from the operator's config (``prometheus.selector``, ``sampling.disks``),
never from a request.

API: ``GET /api/v1/query`` and ``GET /api/v1/query_range``
(https://prometheus.io/docs/prometheus/latest/querying/api/).  Errors are
mapped once, in :func:`_get`:

* ``prometheus.url`` empty (``not_configured``), connection refused
  (``unreachable``), a body that is not the API's JSON or a ``success`` without
  the result shape the API documents (``bad_response``, e.g. a proxy's HTML
  page), an answer over :data:`MAX_BODY_BYTES` (``too_large``; never held
  whole in memory), ``status: "error"`` with ``errorType`` ``bad_data``,
  ``execution``, ``internal``, ``unavailable`` ... -> :class:`UpstreamUnavailable`
  (503, ``details: {upstream: "prometheus", error_type}``);
* no answer within ``timeout_s``, or ``errorType`` ``timeout``/``canceled``
  -> :class:`UpstreamTimeout` (504).

An error is never turned into an empty result.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from agent.errors import UpstreamTimeout, UpstreamUnavailable
from agent.httpbody import TooLarge, read_capped

UPSTREAM = "prometheus"
NOT_CONFIGURED = "prometheus.url is not configured"

#: Range name -> seconds.
RANGES: Final[dict[str, int]] = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
KINDS: Final[tuple[str, ...]] = ("disk", "memory", "steal", "containers", "io")

#: Prometheus refuses a range query with more than 11,000 points per series
#: (``exceeded maximum resolution of 11,000 points per timeseries``, web/api/v1/api.go).
MAX_POINTS = 11_000
#: Charts get at most this many steps (a few hundred points).
TARGET_POINTS = 400
MIN_STEP_S = 15
NICE_STEPS_S: Final[tuple[int, ...]] = (
    15, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 14400, 21600, 43200, 86400)
#: rate() window floor: >= 4 scrape intervals of a 15 s-1 min node_exporter scrape.
MIN_RATE_WINDOW_S = 300
#: The largest answer read (decompressed): the named queries give a few hundred series
#: of at most 400 points (~30 bytes each) at most.
MAX_BODY_BYTES = 16 * 1024 * 1024
#: Filesystems that are not disks (node_exporter reports them too).
PSEUDO_FS = "tmpfs|devtmpfs|overlay|squashfs|nsfs|ramfs|autofs|proc|sysfs"


def choose_step(range_s: int) -> int:
    """The query step, seconds: the smallest of :data:`NICE_STEPS_S` (>= 15 s) giving at
    most :data:`TARGET_POINTS` steps over ``range_s``.

    1h -> 15 s (241 points), 24h -> 300 s (289), 7d -> 1800 s (337), 30d -> 7200 s (361):
    far below Prometheus's 11,000 points per series.
    """
    for step in NICE_STEPS_S:
        if step >= MIN_STEP_S and range_s / step <= TARGET_POINTS:
            return step
    return max(NICE_STEPS_S[-1], math.ceil(range_s / TARGET_POINTS))


def selector(extra: str, *matchers: str) -> str:
    """``{m1,m2,extra}`` from fixed ``matchers`` and the config's ``extra``; ``""`` if none."""
    parts = [m for m in (*matchers, extra.strip()) if m]
    return "{" + ",".join(parts) + "}" if parts else ""


def mount_matcher(mounts: tuple[str, ...]) -> str:
    """``mountpoint=~"..."`` matching exactly ``mounts``: each a regex literal
    (``re.escape``), then quoted as a PromQL string (Go escapes: ``\\`` and ``\"``)."""
    regex = "|".join(re.escape(m) for m in mounts)
    return 'mountpoint=~"' + regex.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class NamedQuery:
    """One PromQL expression of a kind; ``label`` names each result series (a label of the
    result, e.g. ``mountpoint``), or ``name`` is the series name when ``label`` is empty."""

    expr: str
    name: str = ""
    label: str = ""


def _disk_used(mounts: tuple[str, ...], extra: str) -> str:
    """Used percent per mountpoint as ``df`` computes it: used / (used + avail), used = size -
    free (``man 1 df``; node_exporter's node_filesystem_{size,free,avail}_bytes)."""
    fs = selector(extra, mount_matcher(mounts), f'fstype!~"{PSEUDO_FS}"')
    used = f"(node_filesystem_size_bytes{fs} - node_filesystem_free_bytes{fs})"
    return f"max by (mountpoint) (100 * {used} / ({used} + node_filesystem_avail_bytes{fs}))"


def trend_queries(kind: str, step_s: int, *, mounts: tuple[str, ...],
                  extra: str = "") -> tuple[NamedQuery, ...]:
    """The fixed queries of ``kind`` (one of :data:`KINDS`) for a range query at ``step_s``.

    disk: used % per mountpoint of ``mounts``; memory: ``MemAvailable`` and ``swap_used``
    (SwapTotal - SwapFree, ``man 5 proc``), bytes; steal: mean over CPUs of
    rate(node_cpu_seconds_total{mode="steal"}) x 100, percent; containers: ``unhealthy``
    from the agent's own vmagent_containers_unhealthy; io: cAdvisor's
    rate(container_fs_writes_bytes_total) per container ``name``, bytes/s.  rate() windows
    are max(step, 5 min) so no sample falls between steps.  Raises KeyError for another kind.
    """
    w, sel = f"{max(step_s, MIN_RATE_WINDOW_S)}s", selector(extra)
    steal, named = selector(extra, 'mode="steal"'), selector(extra, 'name!=""')
    table: dict[str, tuple[NamedQuery, ...]] = {
        "disk": (NamedQuery(_disk_used(mounts, extra), label="mountpoint"),),
        "memory": (
            NamedQuery(f"sum(node_memory_MemAvailable_bytes{sel})", "MemAvailable"),
            NamedQuery(f"sum(node_memory_SwapTotal_bytes{sel} - node_memory_SwapFree_bytes{sel})",
                       "swap_used")),
        "steal": (NamedQuery(f"100 * avg(rate(node_cpu_seconds_total{steal}[{w}]))", "steal"),),
        "containers": (NamedQuery(f"max(vmagent_containers_unhealthy{sel})", "unhealthy"),),
        "io": (NamedQuery(f"sum by (name) (rate(container_fs_writes_bytes_total{named}[{w}]))",
                          label="name"),),
    }
    return table[kind]


def disk_hourly_max(mounts: tuple[str, ...], extra: str = "") -> str:
    """Hourly maxima (1 min resolution) of the disk used % per mountpoint: the basis of the
    projection (:func:`agent.trend.project`), queried at a 1 h step."""
    return f"max_over_time(({_disk_used(mounts, extra)})[1h:1m])"


def _error(body: Any, http_status: int) -> UpstreamUnavailable | UpstreamTimeout:
    if not isinstance(body, dict) or body.get("status") not in ("success", "error"):
        return UpstreamUnavailable(UPSTREAM, f"not a Prometheus API answer (HTTP {http_status})",
                                   error_type="bad_response", http_status=http_status)
    kind, text = str(body.get("errorType", "")), str(body.get("error", ""))[:500]
    message = f"Prometheus refused the query ({kind}): {text}"
    if kind in ("timeout", "canceled"):
        return UpstreamTimeout(UPSTREAM, message, error_type=kind)
    return UpstreamUnavailable(UPSTREAM, message, error_type=kind, http_status=http_status)


def _bad_response(what: str, http_status: int) -> UpstreamUnavailable:
    return UpstreamUnavailable(UPSTREAM, f"not a Prometheus API answer ({what}, HTTP "
                               f"{http_status})", error_type="bad_response",
                               http_status=http_status)


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    """The body, or UpstreamUnavailable ``too_large`` past :data:`MAX_BODY_BYTES`."""
    try:
        return await read_capped(resp, MAX_BODY_BYTES)
    except TooLarge:
        raise UpstreamUnavailable(
            UPSTREAM, f"answer larger than {MAX_BODY_BYTES // 2**20} MiB",
            error_type="too_large", http_status=resp.status) from None


async def _get(session: aiohttp.ClientSession, url: str, path: str, params: dict[str, str],
               timeout_s: float) -> dict[str, Any]:
    """``data`` of one API call (an object); raises as the module docstring says."""
    if not url:
        raise UpstreamUnavailable(UPSTREAM, NOT_CONFIGURED, error_type="not_configured")
    try:
        async with session.get(f"{url.rstrip('/')}{path}", params=params,
                               timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            status, raw = resp.status, await _read_capped(resp)
    except TimeoutError:
        raise UpstreamTimeout(UPSTREAM, f"no answer in {timeout_s:g} s") from None
    except aiohttp.ClientError as exc:
        raise UpstreamUnavailable(UPSTREAM, f"unreachable ({type(exc).__name__}: {exc}); "
                                  f"check prometheus.url ({url})",
                                  error_type="unreachable") from None
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("status") != "success":
        raise _error(body, status)
    data = body.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("result"), list):
        raise _bad_response("no data.result", status)
    return data


def _checked(data: dict[str, Any], result_type: str) -> list[dict[str, Any]]:
    """``data.result`` when ``data.resultType`` is ``result_type``, else bad_response."""
    if data.get("resultType") != result_type or not all(
            isinstance(r, dict) and isinstance(r.get("metric"), dict) for r in data["result"]):
        raise _bad_response(f"expected a {result_type}", 200)
    return list(data["result"])


async def query(session: aiohttp.ClientSession, url: str, expr: str, at: float,
                timeout_s: float) -> list[dict[str, Any]]:
    """One instant query; the ``data.result`` vector (``[{metric, value: [t, "v"]}]``).

    Raises UpstreamUnavailable / UpstreamTimeout (module docstring).
    """
    data = await _get(session, url, "/api/v1/query",
                      {"query": expr, "time": f"{at:.3f}"}, timeout_s)
    return _checked(data, "vector")


async def query_range(session: aiohttp.ClientSession, url: str, expr: str, *, start: float,
                      end: float, step_s: int, timeout_s: float) -> list[dict[str, Any]]:
    """One range query; the ``data.result`` matrix (``[{metric, values: [[t, "v"], ...]}]``).

    Raises UpstreamUnavailable / UpstreamTimeout (module docstring).
    """
    params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s}"}
    data = await _get(session, url, "/api/v1/query_range", params, timeout_s)
    return _checked(data, "matrix")


def points(values: Any) -> list[list[float]]:
    """``[[unix_s, value], ...]`` from the API's ``[[t, "v"], ...]``; NaN and +-Inf (e.g.
    0/0 on an empty filesystem) are dropped: JSON cannot carry them.

    Raises UpstreamUnavailable (``bad_response``) for a pair that is not two numbers.
    """
    out = []
    try:
        for t, v in values:
            value, at = float(v), float(t)
            if math.isfinite(value) and math.isfinite(at):
                out.append([at, value])
    except (TypeError, ValueError):
        raise _bad_response("a point that is not [time, value]", 200) from None
    return out


def series(result: list[dict[str, Any]], q: NamedQuery) -> list[dict[str, Any]]:
    """``[{name, points}]`` of one query's matrix (from :func:`query_range`), sorted by
    name.  Raises UpstreamUnavailable (``bad_response``) for malformed points."""
    rows = [{"name": str(r["metric"].get(q.label, "?")) if q.label else q.name,
             "points": points(r.get("values"))} for r in result]
    return sorted(rows, key=lambda r: str(r["name"]))
