"""Run records in a real SQLite store: wire shape, step order, finishing, pruning."""

from __future__ import annotations

import time
from pathlib import Path

from agent.host.model import DiskSample
from agent.jobs.base import StepResult
from agent.jobs.records import RunRecords, rfc3339
from agent.store import Store

PROTOCOL_KEYS = {"id", "job", "mode", "dry_run", "trigger", "peer", "started_at",
                 "finished_at", "status", "reason", "disk_before", "disk_after",
                 "freed_bytes", "steps"}
STEP_KEYS = {"name", "status", "freed_bytes", "duration_s", "detail", "error"}


def records(tmp_path: Path) -> RunRecords:
    return RunRecords(Store(tmp_path))


def start(rec: RunRecords, job: str = "cleanup", **kw: object) -> int:
    args: dict[str, object] = {"mode": "standard", "dry_run": False, "trigger": "timer",
                               "peer": None, "pid": 42, **kw}
    return rec.start(job=job, **args)  # type: ignore[arg-type]


def test_rfc3339_is_utc_whole_seconds() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(1_700_000_000.9) == "2023-11-14T22:13:20Z"
    assert rfc3339(None) is None


def test_a_full_record_has_the_protocol_shape(tmp_path: Path) -> None:
    rec = records(tmp_path)
    run_id = start(rec, peer="uid=0 gid=0 pid=1", now=1_700_000_000.0)
    disk = DiskSample("/", 100, 60, 40, 60.0)
    rec.set_disk_before(run_id, [disk])
    rec.add_step(run_id, StepResult("b", "ok", 5_000_000, 1.25, "did b"))
    rec.add_step(run_id, StepResult("a", "failed", 0, 0.5, "", "exit 1"))
    running = rec.get(run_id)
    assert running is not None
    assert running["status"] == "running" and running["finished_at"] is None
    assert running["freed_bytes"] == 5_000_000  # freed so far
    rec.finish(run_id, status="partial", reason="1 of 2 steps failed: a",
               disk_after=[DiskSample("/", 100, 55, 45, 55.0)], now=1_700_000_010.0)
    wire = rec.get(run_id)
    assert wire is not None
    assert set(wire) == PROTOCOL_KEYS | {"duration_s"}
    assert [set(s) for s in wire["steps"]] == [STEP_KEYS, STEP_KEYS]
    assert [s["name"] for s in wire["steps"]] == ["b", "a"]  # in the order they ran
    assert wire["steps"][1]["error"] == "exit 1"
    assert (wire["status"], wire["freed_bytes"], wire["duration_s"]) == ("partial", 5_000_000, 10)
    assert wire["started_at"] == "2023-11-14T22:13:20Z"
    assert wire["disk_before"] == [{"mount": "/", "total_bytes": 100, "used_bytes": 60,
                                    "free_bytes": 40, "used_percent": 60.0}]
    assert wire["disk_after"][0]["used_bytes"] == 55
    assert wire["dry_run"] is False and wire["trigger"] == "timer"


def test_finish_only_closes_a_running_record(tmp_path: Path) -> None:
    rec = records(tmp_path)
    run_id = start(rec)
    rec.finish(run_id, status="ok", reason=None, disk_after=None)
    rec.finish(run_id, status="failed", reason="interrupted", disk_after=None)
    got = rec.get(run_id)
    assert got is not None and (got["status"], got["reason"]) == ("ok", None)


def test_running_lists_only_running(tmp_path: Path) -> None:
    rec = records(tmp_path)
    a, b = start(rec), start(rec, job="watchdog")
    start(rec, status="skipped", reason="hold")
    assert [r["id"] for r in rec.running()] == [a, b]
    assert [r["id"] for r in rec.running("watchdog")] == [b]


def test_prune_by_count_per_job_and_by_age_never_running(tmp_path: Path) -> None:
    rec = records(tmp_path)
    now = time.time()
    old_running = start(rec, now=now - 400 * 86400)
    old = start(rec, status="ok", now=now - 100 * 86400)
    recent = [start(rec, status="ok", now=now - i) for i in range(5, 0, -1)]
    other = [start(rec, job="watchdog", status="ok", now=now) for _ in range(4)]
    deleted = rec.prune("cleanup", keep_days=90, keep_runs=3, now=now)
    assert deleted == 3  # old (age) + the 2 oldest recent (count)
    kept = [r["id"] for r in rec.recent("cleanup", 100)]
    assert kept == [recent[4], recent[3], recent[2], old_running]
    assert rec.get(old) is None
    assert len(rec.recent("watchdog", 100)) == len(other)


def test_deleting_a_run_deletes_its_steps(tmp_path: Path) -> None:
    rec = records(tmp_path)
    run_id = start(rec, status="ok", now=0)
    rec.add_step(run_id, StepResult("x", "ok"))
    rec.prune("cleanup", keep_days=1, keep_runs=10)
    assert rec.store.query("SELECT COUNT(*) AS n FROM job_run_steps")[0]["n"] == 0
