"""``vm-agentctl`` renderings of job replies: ``run``, ``jobs``, ``runs``.

Freed sizes are shown in MB = 10^6 bytes, as Docker prints them
(``docker system df``, "Total reclaimed space"); the wire carries bytes.
"""

from __future__ import annotations

from typing import Any

from agent import clifmt


def mb(n: int | float | None) -> str:
    """Bytes as decimal megabytes with one decimal: ``1234567`` -> ``1.2 MB``."""
    return "-" if n is None else f"{n / 1e6:.1f} MB"


def run_record(d: dict[str, Any]) -> str:
    """One run record: a headline, its steps, disk usage before and after."""
    if "steps" not in d:  # {id, status: running, job} from --no-wait
        return (f"run {d['id']} started ({d['status']}); follow it with: "
                f"vm-agentctl runs {d.get('job') or '<job>'}, or GET /v1/runs/{d['id']}")
    head = (f"{d['job']} ({d['mode']}{', dry-run' if d['dry_run'] else ''}) run {d['id']}: "
            f"{d['status']}, {'would free' if d['dry_run'] else 'freed'} {mb(d['freed_bytes'])}"
            f" in {d.get('duration_s') or 0:.1f} s" + (f" ({d['reason']})" if d["reason"] else ""))
    rows = [[s["name"], s["status"], mb(s["freed_bytes"]), f"{s['duration_s']:.1f} s",
             s["error"] or s["detail"]] for s in d["steps"]]
    parts = [head]
    if rows:
        parts.append(clifmt.table(rows, ["step", "status", "freed", "took", "detail"]))
    parts += _disks(d.get("disk_before") or [], d.get("disk_after") or [])
    return "\n".join(parts)


def _disks(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[str]:
    after_by = {x["mount"]: x for x in after}
    lines = []
    for b in before:
        a = after_by.get(b["mount"])
        now = f" -> {a['used_percent']:.1f} % used" if a else ""
        lines.append(f"disk {b['mount']}: {b['used_percent']:.1f} % used{now}")
    return lines


def jobs(d: dict[str, Any]) -> str:
    """The job table: one row per schedule (a job with several modes, e.g. cleanup's
    standard/weekly/monthly, has one each), its next run and the job's last run; then
    the legacy crontab block with each line's state and where it is."""
    rows = []
    for j in d["jobs"]:
        name = j["name"] if j.get("available", True) else f"{j['name']} (not available)"
        schedules = j.get("schedules") or [{}]
        for index, sched in enumerate(schedules):
            when = sched.get("schedule") or "-"
            if sched.get("mode"):
                when += f" ({sched['mode']})"
            first = index == 0
            rows.append([name if first else "", ",".join(j["modes"]) if first else "",
                         when, sched.get("next_run") or "-",
                         _last(j.get("last_run")) if first else ""])
    out = clifmt.table(rows, ["job", "modes", "schedule", "next run", "last run"])
    legacy = d.get("legacy_crontab") or []
    if legacy:
        out += "\n\nlegacy crontab (# bytelyst-vm-maintenance):\n" + clifmt.table(
            [[_legacy_state(e), e.get("schedule", ""), e.get("next_run") or "-",
              f"{e.get('source', '')}:{e.get('line', '')}", e.get("command", "")]
             for e in legacy], ["state", "schedule", "next run", "where", "command"])
    return out


def _legacy_state(entry: dict[str, Any]) -> str:
    if entry.get("error"):
        return f"unparsable ({entry['error']})"
    return "enabled" if entry.get("enabled", True) else "commented out"


def _last(run: dict[str, Any] | None) -> str:
    if run is None:
        return "never"
    dry = " dry-run" if run["dry_run"] else ""
    return f"{run['status']}{dry}, {mb(run['freed_bytes'])}, {run['started_at']}"


def runs(records: list[dict[str, Any]]) -> str:
    """Recent runs of one job, newest first."""
    if not records:
        return "no runs recorded"
    rows = [[str(r["id"]), r["started_at"], r["mode"] + (" (dry)" if r["dry_run"] else ""),
             r["trigger"], r["status"], mb(r["freed_bytes"]),
             "-" if r.get("duration_s") is None else f"{r['duration_s']:.1f} s",
             r["reason"] or ""] for r in records]
    return clifmt.table(rows, ["id", "started", "mode", "trigger", "status", "freed", "took",
                               "reason"])
