"""``healthcheck`` and ``digest`` through the JobRunner: real Store, sampler, Docker, Prometheus.

The host sampler reads a temp /proc tree (so the figures are known) and
the tests' own Docker engine (a real unhealthy container); its background
samples go through the daemon's recorder into ``host_hourly``.
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.audit import Auditor
from agent.config import Config, PrometheusConfig, SamplingConfig, Threshold
from agent.containers.engine import DockerEngine
from agent.hold import HoldStore
from agent.host.sampler import HostSampler
from agent.jobs.base import StepResult
from agent.jobs.digest import DigestJob, build_digest, digest_text, report_week
from agent.jobs.digest_data import NO_PROM_DATA
from agent.jobs.healthcheck import HealthcheckJob
from agent.jobs.records import RunRecords
from agent.jobs.runner import JobRunner
from agent.journal import JournalWriter
from agent.notify.outbox import Outbox
from agent.store import Store
from agent.wiring import host_recorder
from tests.integration.dockerd import TestEngine
from tests.integration.prometheus_kit import missing_tools, node_series, prometheus_with

pytestmark = pytest.mark.integration

MEMINFO = """\
MemTotal:       16000000 kB
MemFree:         2000000 kB
MemAvailable:    9000000 kB
SwapCached:       {cached} kB
SwapTotal:       4000000 kB
SwapFree:        3500000 kB
"""


def proc_tree(root: Path, *, swap_cached_kb: int) -> Path:
    root.mkdir(exist_ok=True)
    line = "1000 0 0 9000 0 0 0 0 0 0"
    (root / "stat").write_text(f"cpu  {line}\ncpu0 {line}\nctxt 1\n")
    (root / "meminfo").write_text(MEMINFO.format(cached=swap_cached_kb))
    (root / "loadavg").write_text("0.10 0.10 0.10 1/100 42\n")
    return root


def outbox_rows(store: Store, kind: str) -> list[Any]:
    return store.query("SELECT id, text, dedupe_key FROM outbox WHERE kind = ? ORDER BY id",
                       (kind,))


async def test_healthcheck_and_digest_through_the_runner(engine: TestEngine,
                                                         tmp_path: Path) -> None:
    proc = proc_tree(tmp_path / "proc", swap_cached_kb=0)
    cfg = replace(Config(), state_dir=str(tmp_path / "state"), run_dir=str(tmp_path / "run"),
                  sampling=SamplingConfig(interval_s=1, cpu_window_s=0.1,
                                          disks=(str(tmp_path),), proc_root=str(proc)))
    cfg = replace(cfg, thresholds=replace(cfg.thresholds, disk_used_percent=Threshold()))
    store = Store(cfg.state_dir)
    Outbox(store)  # its table, for the "nothing queued" checks before the first message
    docker = DockerEngine(engine.host, 20)
    sampler = HostSampler(cfg.sampling, cfg.thresholds, docker.summary,
                          on_sample=host_recorder(store))
    auditor = Auditor(JournalWriter(socket_path=str(tmp_path / "no.sock"), stream=io.StringIO()))
    records = RunRecords(store)
    runner = JobRunner(jobs={"healthcheck": HealthcheckJob(), "digest": DigestJob()},
                       records=records, config=cfg, auditor=auditor,
                       hold=HoldStore(cfg.state_dir), services=SimpleNamespace(
                           sampler=sampler, store=store))
    try:
        # 1. a quiet host: no message, the record says what was found
        ok = await runner.run("healthcheck", trigger="timer")
        assert ok["status"] == "ok" and ok["mode"] == "default", ok
        assert ok["steps"][0]["detail"].startswith("status OK: steal 0.0 %, MemAvailable "
                                                   "9.2 GB, swap 512 MB, SwapCached 0 MB, "
                                                   "unhealthy 0; no message")
        assert outbox_rows(store, "healthcheck") == []

        # 2. SwapCached 250 MB and an unhealthy container: one message with both
        engine.run_unhealthy("hcd-sick")
        engine.wait_health("hcd-sick", "unhealthy")
        proc_tree(proc, swap_cached_kb=244_141)  # 250.0 MB (kB = 1024 bytes)
        dry = await runner.run("healthcheck", dry_run=True)
        assert dry["steps"][0]["status"] == "planned" and outbox_rows(store, "healthcheck") == []
        warn = await runner.run("healthcheck")
        assert warn["status"] == "ok", warn
        sent = outbox_rows(store, "healthcheck")
        assert len(sent) == 1
        assert f"message {sent[0]['id']} queued" in warn["steps"][0]["detail"]
        lines = sent[0]["text"].splitlines()
        assert lines[0].startswith("vm-agent health check: WARN at ")
        assert lines[1] == "2 metrics over threshold:"
        assert any(x.startswith("- [WARN] SwapCached: 250 MB (WARN above 200 MB). SwapCached "
                                "is an early sign of memory pressure") for x in lines)
        assert any(x.startswith("- [WARN] Unhealthy containers: 1 (hcd-sick) (WARN above 0)")
                   for x in lines)

        # 3. background samples land in host_hourly through the daemon's recorder
        await sampler.start()
        for _ in range(50):
            rows = store.query("SELECT samples FROM host_hourly")
            if rows and sum(r["samples"] for r in rows) >= 2:
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the sampler recorded nothing into host_hourly")
        await sampler.stop()

        # 4. the digest, once per ISO week
        run_id = records.start(job="cleanup", mode="standard", dry_run=False, trigger="timer",
                               peer=None, pid=1, now=time.time() - 3600)
        records.add_step(run_id, StepResult("docker_dangling_images", "ok", 2_000_000_000))
        records.finish(run_id, status="ok", reason=None, disk_after=None)
        first = await runner.run("digest", trigger="timer")
        assert first["status"] == "ok" and first["steps"][0]["status"] == "ok", first
        digests = outbox_rows(store, "digest")
        assert len(digests) == 1
        week = report_week(time.time())
        assert digests[0]["dedupe_key"] == f"digest:{week}"
        text = digests[0]["text"]
        assert f"vm-agent weekly digest {week} (" in text
        for line in ("- CPU steal: 0.0 % average", "- Free RAM (MemAvailable): 9.2 GB average",
                     "- Peak swap used: 512 MB", "- Unhealthy containers: at most 1 at once",
                     "- Cleanup freed: 2.0 GB in 1 run(s) (standard 1)",
                     "- Watchdog restarts: 0", "- Backup-repair failures: 0 of 0 run(s)"):
            assert line in text.splitlines(), (line, text)
        again = await runner.run("digest")
        assert again["status"] == "ok" and again["steps"][0]["status"] == "skipped"
        assert again["steps"][0]["detail"] == f"already sent for {week}; nothing queued"
        assert len(outbox_rows(store, "digest")) == 1
        assert Outbox(store).counts()["pending"] == 2  # one healthcheck, one digest
    finally:
        await sampler.stop()
        docker.close()


async def test_digest_from_a_real_prometheus(tmp_path: Path) -> None:
    why = missing_tools()
    if why:
        pytest.skip(why)
    end = time.time() - 3 * 3600  # the backfilled blocks lie wholly before the head
    with prometheus_with(node_series(end), tmp_path / "prom") as url:
        cfg = replace(Config(), state_dir=str(tmp_path / "state"), run_dir=str(tmp_path / "run"),
                      prometheus=PrometheusConfig(url=url, timeout_s=20))
        store = Store(cfg.state_dir)
        auditor = Auditor(JournalWriter(socket_path=str(tmp_path / "no.sock"),
                                        stream=io.StringIO()))
        runner = JobRunner(jobs={"digest": DigestJob(clock=lambda: end)},
                           records=RunRecords(store), config=cfg, auditor=auditor,
                           hold=HoldStore(cfg.state_dir), services=SimpleNamespace(store=store))
        record = await runner.run("digest", trigger="timer")
        assert record["steps"][0]["status"] == "ok", record
        text = outbox_rows(store, "digest")[0]["text"].splitlines()
        assert text[1:7] == [
            f"Host figures from Prometheus ({url}).",
            "- CPU steal: 3.0 % average",
            "- Free RAM (MemAvailable): 3.0 GB average",
            "- Peak swap used: 700 MB",  # a one-minute spike, caught between subquery steps
            "- Disk use (peak): / 73.7 %",  # /other is not in sampling.disks
            "- Unhealthy containers: no data: the agent has no Docker samples for that week",
        ]
        # a selector no steal series matches: that figure is "no data", never 0
        narrow = replace(cfg, prometheus=replace(cfg.prometheus, selector='instance="vm1"'))
        d = await build_digest(store, narrow, end=end)
        assert d.host.steal_avg_percent is None
        # 2 and 4 GB alternate each minute: whether the 7-day window holds 10,080 or
        # 10,081 samples depends on where the sub-second `end` falls, so +-1e9/10081
        assert d.host.mem_avail_avg_bytes == pytest.approx(3e9, rel=1e-4)
        assert f"- CPU steal: {NO_PROM_DATA}" in digest_text(d, narrow.thresholds)
