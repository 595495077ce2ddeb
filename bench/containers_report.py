"""bench/containers.py's targets (issue 3, "Speed") and its printed table."""

from __future__ import annotations

from typing import Any

from bench.fleet import CONTAINERS, UNHEALTHY

LIMIT_MS = 150.0
#: "health latency does not move while a pass runs", read as: with passes running back
#: to back on the agent, p50 within 1.25x and p99 within 2x of the same figure with no
#: pass, both measured in the same run (medians of the rounds).  The control (passes on
#: another agent) is reported, not judged.
HEALTH_P50_RATIO, HEALTH_P99_RATIO = 1.25, 2.0

#: (name, what, limit, "<" | "<=").
TARGETS = (
    ("pass_p50_ms", "watchdog pass p50 (its step's duration_s), ms", LIMIT_MS, "<"),
    ("pass_call_p50_ms", "POST /v1/jobs/watchdog/run round trip p50, ms", LIMIT_MS, "<"),
    ("list_p50_ms", "GET /v1/containers round trip p50, ms", LIMIT_MS, "<"),
    ("health_p50_ratio", "health p50, passes running / no pass", HEALTH_P50_RATIO, "<="),
    ("health_p99_ratio", "health p99, passes running / no pass", HEALTH_P99_RATIO, "<="),
)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value and whether it is met."""
    med = results["health"]["median"]
    values = {"pass_p50_ms": results["passes"]["pass"]["p50_ms"],
              "pass_call_p50_ms": results["passes"]["client"]["p50_ms"],
              "list_p50_ms": results["list"]["p50_ms"],
              "health_p50_ratio": med["passes"]["p50_ms"] / med["idle"]["p50_ms"],
              "health_p99_ratio": med["passes"]["p99_ms"] / med["idle"]["p99_ms"]}
    return [{"name": n, "what": w, "value": values[n], "limit": lim, "op": op,
             "met": values[n] < lim if op == "<" else values[n] <= lim}
            for n, w, lim, op in TARGETS]


def _row(label: str, s: dict[str, Any]) -> str:
    return f"  {label:52} p50 {s['p50_ms']:8.2f}  p95 {s['p95_ms']:8.2f}  max {s['max_ms']:8.2f}"


def table(results: dict[str, Any]) -> str:
    """The human report: machine, timings, health with/without passes, targets."""
    m, h, ps = results["machine"], results["health"]["median"], results["docker_ps"]
    lines = [f"vm-agent containers bench, {m['date']}: {m['nproc']} x {m['cpu_model']}, "
             f"Linux {m['kernel']}, Python {m['python']}",
             f"load average at start {m['loadavg_start']}, at end {m.get('loadavg_end')}",
             f"{CONTAINERS} running containers, {UNHEALTHY} unhealthy (opted out: decided, "
             f"never restarted); agent saw {results['docker_seen']}", "",
             "ms, client-side, a new connection per call:",
             _row("GET /v1/containers (event stream followed)", results["list"]),
             _row("GET /v1/containers (events off: every inspect)", results["list_cold"]),
             _row("POST /v1/jobs/watchdog/run {wait: true}", results["passes"]["client"]),
             _row("  of which the pass (step duration_s)", results["passes"]["pass"]),
             _row(f"docker ps --filter health=unhealthy (lists {ps['unhealthy_listed']})", ps)
             if "p50_ms" in ps else f"  docker ps: {ps.get('error')}",
             f"  last pass: {results['passes']['detail']}",
             "  CPU per pass, ms: " + ", ".join(
                 f"{k} {v:.1f}" for k, v in results["passes"]["cpu_ms_per_pass"].items()), "",
             "GET /v1/health, keep-alive sequential, median of rounds (ms):",
             f"  {'':24} {'p50':>8} {'p99':>8} {'max':>8}"]
    for side, label in (("idle", "no pass running"), ("passes", "passes back to back"),
                        ("other_passes", "  on another agent")):
        if side in h:
            lines.append(f"  {label:24} {h[side]['p50_ms']:8.3f} {h[side]['p99_ms']:8.3f} "
                         f"{h[side]['max_ms']:8.3f}")
    share = [r["passes"]["busy_share"] for r in results["health"]["rounds"]]
    lines += [f"  a pass was running {min(share):.0%}-{max(share):.0%} of the time "
              "(passes back to back)"]
    if "memory" in results:
        mem = results["memory"]
        lines.append(f"agent memory after the health phase: VmRSS {mem['vmrss_bytes'] / 1e6:.1f}"
                     f" MB, VmHWM {mem['vmhwm_bytes'] / 1e6:.1f} MB, USS "
                     f"{mem['psutil_uss_bytes'] / 1e6:.1f} MB, {mem['threads']} threads")
    lines += ["", "targets:"]
    for t in results["targets"]:
        verdict = "met" if t["met"] else "MISSED"
        lines.append(f"  {t['what']:52} {t['value']:8.3f} {t['op']} {t['limit']:<5g} {verdict}")
    return "\n".join(lines)


