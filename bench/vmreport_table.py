"""bench/vmreport.py's own target (issue 7) and its printed report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench import report
from bench.common import MB

#: Issue 3: "restarted once its FailingStreak reaches 3, within seconds of the third
#: failure", read as: the restart issued under 5 s after the unhealthy event, every trial.
REACTION_LIMIT_S = 5.0


def issue7_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The watchdog's reaction (slowest trial) against :data:`REACTION_LIMIT_S`."""
    value = results["reaction"]["to_record_s"]["max"]
    return [{"name": "reaction_max_s", "value": value, "limit": REACTION_LIMIT_S, "op": "<",
             "what": "watchdog: 3rd failed check to restart issued, slowest, s",
             "met": value is not None and value < REACTION_LIMIT_S}]


def _header(results: dict[str, Any]) -> list[str]:
    m, v = results["machine"], results["machine"]["versions"]
    return [f"vm-agent performance report (issue 7), {m['date']}",
            f"machine: nproc {m['nproc']}, {m['cpu_model']}, {m['memory_bytes'] / 1e9:.1f} GB, "
            f"Linux {m['kernel']}, Python {m['python']}",
            f"docker: dockerd {v['dockerd']}; {v['containerd']}; engine {v['engine']}; "
            f"CLI {v['docker_cli']}; {v['node_exporter']}",
            f"load average (1/5/15 min): start {m['loadavg_start']}, end {m.get('loadavg_end')} "
            "(a shared machine: other work skews every figure)"]


_ROWS: tuple[tuple[str, Callable[[dict[str, Any]], float], str], ...] = (
    # label, figure getter (one server's figures -> value), format
    ("keep-alive sequential p50, ms", lambda s: s["seq"]["p50_ms"], "{:.3f}"),
    ("keep-alive sequential p99, ms", lambda s: s["seq"]["p99_ms"], "{:.3f}"),
    ("new connection each p50, ms", lambda s: s["conn"]["p50_ms"], "{:.3f}"),
    ("32 clients throughput, req/s", lambda s: s["conc"]["throughput_rps"], "{:.0f}"),
    ("32 clients p50, ms", lambda s: s["conc"]["p50_ms"], "{:.3f}"),
    ("32 clients p99, ms", lambda s: s["conc"]["p99_ms"], "{:.3f}"),
    ("server CPU per request (seq), us", lambda s: s["seq"]["server_cpu_us_per_request"],
     "{:.0f}"),
    ("server CPU per request (32 clients), us",
     lambda s: s["conc"]["server_cpu_us_per_request"], "{:.0f}"),
)


def _yardstick(results: dict[str, Any]) -> list[str]:
    http, scrape, size = results["http"]["median"], results["scrape"], results["answer_bytes"]
    sides = {"baseline": http["baseline"], "agent": http["agent"], "node_exporter": scrape}
    names = ("baseline", "agent", "node_exporter")
    lines = ["GET /v1/health (baseline, agent; median of rounds) vs node_exporter GET /metrics "
             "(1 round), same loader:",
             "  node_exporter: default collectors; failing here (logged, answered fast): "
             + (", ".join(scrape["failed_collectors"]) or "none"),
             f"  a scrape renders every collector's series: {size['node_exporter']['total_bytes']}"
             f" bytes per answer (gzip {scrape['bytes_gzip']['total_bytes']}) against "
             f"{size['agent']['total_bytes']} for the agent's /v1/health: compare per byte too",
             f"  {'':42} {'baseline':>10} {'agent':>10} {'node_exp':>10}",
             f"  {'answer size (head + body), bytes':42} "
             + " ".join(f"{size[n]['total_bytes']:>10}" for n in names)]
    for label, get, fmt in _ROWS:
        lines.append(f"  {label:42} " + " ".join(f"{fmt.format(get(sides[n])):>10}"
                                                 for n in names))
    per_kb = [sides[n]["seq"]["server_cpu_us_per_request"] / (size[n]["total_bytes"] / 1000)
              for n in names]
    lines.append(f"  {'server CPU per KB answered (seq), us':42} "
                 + " ".join(f"{x:>10.1f}" for x in per_kb))
    mem, idle = results["memory_after_idle"], results["idle_all"]
    lines += [f"  {'VmRSS after the load, MB':42} "
              + " ".join(f"{mem[n]['vmrss_bytes'] / MB:>10.1f}" for n in names),
              f"  {'VmHWM (peak), MB':42} "
              + " ".join(f"{mem[n]['vmhwm_bytes'] / MB:>10.1f}" for n in names),
              f"  {'threads':42} " + " ".join(f"{mem[n]['threads']:>10}" for n in names),
              f"  {'idle CPU, % of one core':42} "
              + " ".join(f"{idle[n]['percent_of_one_core']:>10.3f}" for n in names),
              f"  (idle: the same {idle['agent']['seconds']:.0f} s window for all three, "
              "no requests; the agent with 40 containers)"]
    return lines


def _survey(results: dict[str, Any]) -> list[str]:
    lines = ["survey cost (client round trip, a new connection per call; CPU in ms per call):",
             f"  {'containers':>10} {'list p50':>9} {'list p95':>9} {'list CPU':>9} "
             f"{'pass p50':>9} {'pass p95':>9} {'call p50':>9} {'pass CPU':>9} "
             f"{'dockerd':>9}"]
    for s in results["survey"]:
        lst, p = s["list"], s["passes"]
        cpu = p["cpu_ms_per_pass"]
        lines.append(f"  {s['containers']:>10} {lst['p50_ms']:>9.2f} {lst['p95_ms']:>9.2f} "
                     f"{lst['agent_cpu_ms_per_call']:>9.2f} {p['pass']['p50_ms']:>9.2f} "
                     f"{p['pass']['p95_ms']:>9.2f} {p['client']['p50_ms']:>9.2f} "
                     f"{cpu['agent']:>9.2f} {cpu['dockerd']:>9.2f}")
    lines.append("  ms; list = GET /v1/containers; pass = its step's duration_s; call = POST "
                 "/v1/jobs/watchdog/run round trip; CPU = agent (all threads), dockerd per pass")
    return lines


def _reaction(results: dict[str, Any]) -> list[str]:
    r = results["reaction"]
    lines = ["watchdog reaction, seconds after Docker's 'health_status: unhealthy' event (the "
             "3rd failed check, retries 3, check every 1 s), event-driven watchdog as shipped:",
             f"  {'container':12} {'streak':>6} {'record':>8} {'kill':>8} {'restart':>8} "
             f"{'took':>8}"]
    for t in r["trials"]:
        cells = [t["to_record_s"], t["to_kill_s"], t["to_restart_event_s"], t["restart_took_s"]]
        lines.append(f"  {t['container']:12} {t['failing_streak']:>6} "
                     + " ".join("       -" if c is None else f"{c:8.3f}" for c in cells))
    for key, label in (("to_record_s", "restart issued (agent's record)"),
                       ("to_kill_s", "Docker's kill event (SIGTERM sent)"),
                       ("to_restart_event_s", "Docker's restart event (running again)")):
        med, top = r[key]["median"], r[key]["max"]
        if med is not None:
            lines.append(f"  {label:40} median {med:.3f} s, max {top:.3f} s")
    return lines


def _cleanup(results: dict[str, Any]) -> list[str]:
    c = results["cleanup"]
    lines = [f"cleanup, mode {c['mode']}, steps {', '.join(c['steps_configured'])}: the test "
             "engine and temp folders only (no journal, apt or pnpm step in any mode)",
             "  created: " + ", ".join(f"{k} {v}" for k, v in c["created"].items())]
    for key in ("dry_run", "real_run"):
        run = c[key]
        lines.append(f"  {key.replace('_', ' ')}: {run['client_s']:.3f} s round trip, steps "
                     f"{run['steps_s']:.3f} s, "
                     f"{run['status']}, freed {run['freed_bytes']} bytes"
                     + (" (planned)" if key == "dry_run" else ""))
        lines += [f"    {s['name']:24} {s['status']:8} {float(s['duration_s'] or 0):7.3f} s  "
                  f"{s['detail']}" for s in run["steps"]]
    lines.append("  after the real run: " + ", ".join(f"{k} {v}" for k, v in c["after"].items()))
    return lines


def _health_passes(results: dict[str, Any]) -> list[str]:
    med = results["health_passes"]["median"]
    labels = {"idle": "no pass", "passes": "passes back to back on the agent",
              "other_passes": "passes on a second agent (control)"}
    return ["GET /v1/health keep-alive with 40 containers (issue 3, bench/containers.py), ms:"] + [
        f"  {label:36} p50 {med[k]['p50_ms']:.3f}  p99 {med[k]['p99_ms']:.3f}"
        for k, label in labels.items() if k in med]


def _targets(results: dict[str, Any]) -> list[str]:
    lines = ["targets (issues 2, 3, 7):"]
    for t in results["targets"]:
        value = "-" if t["value"] is None else f"{t['value']:8.3f}"
        lines.append(f"  #{t['issue']} {t['what']:54} {value:>8} {t['op']} {t['limit']:<5g} "
                     f"{'met' if t['met'] else 'MISSED'}")
    missed = [t["name"] for t in results["targets"] if not t["met"]]
    lines.append("all targets met" if not missed else f"MISSED: {', '.join(missed)}")
    return lines


def table(results: dict[str, Any]) -> str:
    """The whole report: machine, issue 2's table, the yardstick, survey, reaction,
    cleanup, targets."""
    issue2 = [t for t in results["targets"] if t["issue"] == 2]
    sections = [_header(results),
                ["== issue 2's figures (bench/report.py) =="],
                report.table(results | {"targets": issue2}).splitlines()[3:],
                _yardstick(results), _survey(results), _health_passes(results),
                _reaction(results), _cleanup(results), _targets(results)]
    return "\n\n".join("\n".join(s) for s in sections)
