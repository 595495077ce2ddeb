"""The bench's targets (issue 2, "Speed and memory") and its printed table."""

from __future__ import annotations

from typing import Any

from bench.common import MB, MIB

#: (name, what, limit, "<=" | ">=" | "<").  Ratios are agent / baseline.
TARGETS = (
    ("seq_p50_ratio", "keep-alive p50 latency, agent / baseline", 1.5, "<="),
    ("conc_rps_ratio", "32-client throughput, agent / baseline", 0.6, ">="),
    ("rss_mb", "agent VmRSS with the containers running, MB", 60.0, "<"),
    ("ready_max_s", "exec to READY=1, slowest of the runs, s", 1.0, "<"),
    ("idle_cpu_percent", "agent CPU while idle, % of one core", 1.0, "<"),
)


def _met(value: float, limit: float, op: str) -> bool:
    return {"<=": value <= limit, ">=": value >= limit, "<": value < limit}[op]


def ratios(http: dict[str, Any]) -> dict[str, float]:
    """Agent / baseline for every median figure (latency: lower is better; rps: higher)."""
    base, agent = http["median"]["baseline"], http["median"]["agent"]
    out: dict[str, float] = {}
    for mode in ("seq", "conn", "conc"):
        for key in ("p50_ms", "p99_ms", "throughput_rps", "server_cpu_us_per_request"):
            if key in base[mode] and base[mode][key]:
                out[f"{mode}_{key}"] = agent[mode][key] / base[mode][key]
    return out


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value and whether it is met."""
    r = ratios(results["http"])
    values = {"seq_p50_ratio": r["seq_p50_ms"], "conc_rps_ratio": r["conc_throughput_rps"],
              "rss_mb": results["memory"]["vmrss_bytes"] / MB,
              "ready_max_s": results["ready"]["max_s"],
              "idle_cpu_percent": results["idle_cpu"]["percent_of_one_core"]}
    return [{"name": name, "what": what, "value": values[name], "limit": limit, "op": op,
             "met": _met(values[name], limit, op)} for name, what, limit, op in TARGETS]


def round_line(one: dict[str, dict[str, Any]]) -> str:
    """One line per round: seq p50, conn p50, conc req/s, baseline vs agent."""
    b, a = one["baseline"], one["agent"]
    return (f"seq p50 {b['seq']['p50_ms']:.3f}/{a['seq']['p50_ms']:.3f} ms, "
            f"conn p50 {b['conn']['p50_ms']:.3f}/{a['conn']['p50_ms']:.3f} ms, "
            f"32 clients {b['conc']['throughput_rps']:.0f}/{a['conc']['throughput_rps']:.0f} "
            f"req/s (baseline/agent)")


_HTTP_ROWS = (
    ("keep-alive, sequential: p50 ms", "seq", "p50_ms", "{:.3f}"),
    ("keep-alive, sequential: p99 ms", "seq", "p99_ms", "{:.3f}"),
    ("new connection each: p50 ms", "conn", "p50_ms", "{:.3f}"),
    ("new connection each: p99 ms", "conn", "p99_ms", "{:.3f}"),
    ("32 clients: throughput req/s", "conc", "throughput_rps", "{:.0f}"),
    ("32 clients: p50 ms", "conc", "p50_ms", "{:.3f}"),
    ("32 clients: p99 ms", "conc", "p99_ms", "{:.3f}"),
    ("server CPU per request, us (seq)", "seq", "server_cpu_us_per_request", "{:.0f}"),
    ("server CPU per request, us (32 clients)", "conc", "server_cpu_us_per_request", "{:.0f}"),
)


def _http_table(http: dict[str, Any]) -> list[str]:
    base, agent = http["median"]["baseline"], http["median"]["agent"]
    lines = [f"{'GET /v1/health (median of rounds)':42} {'baseline':>10} {'agent':>10} "
             f"{'ratio':>7}"]
    for label, mode, key, fmt in _HTTP_ROWS:
        b, a = base[mode][key], agent[mode][key]
        ratio = f"{a / b:.2f}" if b else "-"
        lines.append(f"{label:42} {fmt.format(b):>10} {fmt.format(a):>10} {ratio:>7}")
    errors = sum(side[mode]["errors"] for side in (base, agent) for mode in side)
    lines.append(f"{'non-200 answers (all modes)':42} {errors:>10}")
    return lines


def _agent_lines(results: dict[str, Any]) -> list[str]:
    mem, ready = results["memory"], results["ready"]
    docker = results["docker_seen"]
    return [
        f"agent saw {docker['containers_total']} containers, {docker['running']} running, "
        f"{docker['unhealthy']} unhealthy",
        f"memory: VmRSS {mem['vmrss_bytes'] / MB:.1f} MB ({mem['vmrss_bytes'] / MIB:.1f} MiB), "
        f"peak VmHWM {mem['vmhwm_bytes'] / MB:.1f} MB, USS {mem['psutil_uss_bytes'] / MB:.1f} MB,"
        f" {mem['threads']} threads",
        f"idle CPU: {results['idle_cpu']['cpu_s']:.2f} s over "
        f"{results['idle_cpu']['seconds']:.0f} s",
        f"exec to READY=1: median {ready['median_s']:.3f} s, max {ready['max_s']:.3f} s "
        f"over {len(ready['runs'])} runs",
    ]


def table(results: dict[str, Any]) -> str:
    """The whole human report: machine, HTTP table, agent figures, targets."""
    m = results["machine"]
    lines = [f"vm-agent bench, {m['date']}: {m['nproc']} x {m['cpu_model']}, "
             f"{m['memory_bytes'] / 1e9:.1f} GB, Linux {m['kernel']}, Python {m['python']}",
             f"load average (1/5/15 min) at start {m['loadavg_start']}, at end "
             f"{m.get('loadavg_end')}: anything else running skews the figures",
             "", *_http_table(results["http"]), "", *_agent_lines(results), "", "targets:"]
    for t in results["targets"]:
        verdict = "met" if t["met"] else "MISSED"
        lines.append(f"  {t['what']:52} {t['value']:8.3f} {t['op']} {t['limit']:<5g} {verdict}")
    return "\n".join(lines)
