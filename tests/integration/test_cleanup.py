"""The cleanup job on the tests' own Docker engine and on real tools (journalctl, apt-get).

Images are real: loaded with a creation time we choose, used by running and
stopped containers, with keep labels and keep-pattern tags (see
cleanup_kit.py for how and why).  Every test runs a dry-run first, checks
nothing changed, then the real run, and checks exactly what is gone and that
the real figures (Docker's SpaceReclaimed, file sizes) equal the dry-run's.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.audit import Auditor
from agent.config import (
    CleanupConfig,
    CleanupModes,
    Config,
    DockerConfig,
    PathRetentionRule,
)
from agent.containers.engine import DockerEngine
from agent.errors import Conflict, Locked
from agent.hold import HoldStore
from agent.jobs.cleanup import CleanupJob
from agent.jobs.records import RunRecords
from agent.jobs.runner import JobRunner
from agent.journal import JournalWriter
from agent.runner import which
from agent.store import Store
from tests.integration import cleanup_kit as kit
from tests.integration.dockerd import KEEP_RUNNING, TestEngine

pytestmark = pytest.mark.integration

DOCKER_STEPS = ("docker_build_cache", "docker_dangling_images", "docker_aged_images")
HOST_STEPS = ("journal_vacuum", "apt", "path_retention", "pnpm_store")


def make_runner(tmp: Path, host: str, cleanup: CleanupConfig) -> tuple[JobRunner, HoldStore]:
    cfg = replace(Config(), state_dir=str(tmp / "state"), run_dir=str(tmp / "run"),
                  docker=DockerConfig(host=host, timeout_s=20), cleanup=cleanup)
    store, hold = Store(cfg.state_dir), HoldStore(cfg.state_dir)
    auditor = Auditor(JournalWriter(socket_path=str(tmp / "no.sock"), stream=io.StringIO()))
    services = SimpleNamespace(docker=DockerEngine(host, 20))
    runner = JobRunner(jobs={"cleanup": CleanupJob()}, records=RunRecords(store), config=cfg,
                       auditor=auditor, hold=hold, services=services)
    return runner, hold


def steps(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in record["steps"]}


def make_images(engine: TestEngine) -> dict[str, str]:
    """The image zoo; returns ``{role: image id}``."""
    client = engine.client()
    bb = kit.busybox_layers(client)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ids = {
        "aged": kit.load_image(client, tag="vmt/aged:1", created=kit.OLD,
                               layers=[kit.random_layer(300_000)]),
        "aged_two_tags": kit.load_image(client, tag="vmt/aged2:1", created=kit.OLD,
                                        layers=[kit.random_layer(120_000)]),
        "stopped_user": kit.load_image(client, tag="vmt/used-stopped:1", created=kit.OLD,
                                       layers=[*bb, kit.random_layer(200_000)]),
        "running_user": kit.load_image(client, tag="vmt/used-running:1", created=kit.OLD,
                                       layers=[*bb, kit.random_layer(210_000)]),
        "keep_label": kit.load_image(client, tag="vmt/labelled:1", created=kit.OLD,
                                     layers=[kit.random_layer(150_000)],
                                     labels={"vm-agent.keep": "yes"}),
        "keep_pattern": kit.load_image(client, tag="vmt/keep-db:16", created=kit.OLD,
                                       layers=[kit.random_layer(160_000)]),
        "fresh": kit.load_image(client, tag="vmt/fresh:1", created=now,
                                layers=[kit.random_layer(170_000)]),
        "dangling": kit.load_image(client, tag=None, created=now,
                                   layers=[kit.random_layer(250_000)]),
    }
    client.api.tag(ids["aged_two_tags"], "vmt/aged2", "other-tag")
    stopped = client.containers.run("vmt/used-stopped:1", ["true"], detach=True,
                                    network_mode="none", name="cleanup-stopped-user")
    stopped.wait(timeout=30)
    client.containers.run("vmt/used-running:1", KEEP_RUNNING, detach=True, network_mode="none",
                          name="cleanup-running-user")
    return ids


def docker_cleanup() -> CleanupConfig:
    return CleanupConfig(
        modes=CleanupModes(standard=("docker_dangling_images",), weekly=DOCKER_STEPS,
                           monthly=("docker_build_cache",)),
        build_cache_age_s=0, build_cache_all_in=("monthly",), image_age_days=365,
        keep_images=("vmt/keep-*",), keep_labels=("vm-agent.keep",))


async def test_docker_steps_dry_run_then_real(engine: TestEngine, tmp_path: Path) -> None:
    client = engine.client()
    ids = make_images(engine)
    kit.buildkit_build(client, "vmt/bk:1", {
        "Dockerfile": b"FROM scratch\nCOPY a /a\nCOPY b /b\n",
        "a": os.urandom(100_000), "b": os.urandom(50_000)})
    cache_before = kit.build_cache_ids(client)
    assert cache_before, "BuildKit left no build cache records"
    images_before = kit.image_ids(client)
    layers_before = client.df()["LayersSize"]
    runner, _hold = make_runner(tmp_path, engine.host, docker_cleanup())

    dry = await runner.run("cleanup", mode="weekly", dry_run=True)
    assert dry["status"] == "ok", dry
    assert kit.image_ids(client) == images_before
    assert kit.build_cache_ids(client) == cache_before
    planned = steps(dry)
    assert {s["status"] for s in planned.values()} == {"planned"}
    assert "creation" in planned["docker_aged_images"]["detail"]

    real = await runner.run("cleanup", mode="weekly")
    assert real["status"] == "ok", real
    done = steps(real)
    gone = images_before - kit.image_ids(client)
    assert gone == {ids["aged"], ids["aged_two_tags"], ids["dangling"]}
    for name in DOCKER_STEPS:
        assert done[name]["freed_bytes"] == planned[name]["freed_bytes"], name
    assert done["docker_build_cache"]["freed_bytes"] > 150_000  # the two COPY'd files at least
    assert kit.build_cache_ids(client) < cache_before
    layers_freed = layers_before - client.df()["LayersSize"]
    assert layers_freed == (done["docker_dangling_images"]["freed_bytes"]
                            + done["docker_aged_images"]["freed_bytes"])
    assert real["freed_bytes"] == sum(s["freed_bytes"] for s in done.values())
    assert {c.name for c in client.containers.list(all=True)} >= {
        "cleanup-stopped-user", "cleanup-running-user"}


async def test_monthly_prunes_all_build_cache(engine: TestEngine, tmp_path: Path) -> None:
    client = engine.client()
    kit.buildkit_build(client, "vmt/bk-all:1", {"Dockerfile": b"FROM scratch\nCOPY c /c\n",
                                                "c": os.urandom(80_000)})
    client.api.remove_image("vmt/bk-all:1")  # its layers are now cache only
    runner, _hold = make_runner(tmp_path, engine.host, docker_cleanup())
    dry = await runner.run("cleanup", mode="monthly", dry_run=True)
    real = await runner.run("cleanup", mode="monthly")
    planned, done = steps(dry)["docker_build_cache"], steps(real)["docker_build_cache"]
    assert "all unused build cache" in planned["detail"]
    assert done["freed_bytes"] == planned["freed_bytes"] >= 80_000
    assert kit.build_cache_ids(client) == set()


def old_file(path: Path, size: int, *, days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    stamp = time.time() - days * 86400
    os.utime(path, (stamp, stamp))
    return path


def journal_name(seq: int, realtime_s: float) -> str:
    return (f"system@{'ab' * 16}-{seq:016x}-{int(realtime_s * 1e6):016x}.journal")


def host_tree(tmp: Path) -> tuple[CleanupConfig, dict[str, Path]]:
    """A journal folder, an apt cache and a retention root with a symlink out of it."""
    journal, apt, root, outside = (tmp / n for n in ("journal", "apt", "pg", "outside"))
    now = time.time()
    files = {
        "j_old": old_file(journal / journal_name(1, now - 90 * 86400), 300_000, days=0),
        "j_mid": old_file(journal / journal_name(2, now - 20 * 86400), 200_000, days=0),
        "j_new": old_file(journal / journal_name(3, now - 86400), 100_000, days=0),
        "j_active": old_file(journal / "system.journal", 50_000, days=0),
        "deb": old_file(apt / "archives" / "foo_1.0_amd64.deb", 120_000, days=0),
        "partial": old_file(apt / "archives" / "partial" / "bar.deb.FAILED", 30_000, days=0),
        "other": old_file(apt / "archives" / "notes.txt", 40_000, days=0),
        "old_log": old_file(root / "data" / "pg_log" / "postgresql-1.log", 70_000, days=30),
        "new_log": old_file(root / "data" / "pg_log" / "postgresql-2.log", 60_000, days=1),
        "old_other": old_file(root / "data" / "base.dat", 50_000, days=30),
        "outside_log": old_file(outside / "victim.log", 40_000, days=30),
    }
    (root / "data" / "escape").symlink_to(outside, target_is_directory=True)
    (root / "data" / "link.log").symlink_to(files["outside_log"])
    cfg = CleanupConfig(
        modes=CleanupModes(standard=HOST_STEPS, weekly=HOST_STEPS, monthly=HOST_STEPS),
        journal_directory=str(journal), journal_vacuum_size_bytes=0,
        journal_vacuum_time_s=30 * 86400, apt_cache_dir=str(apt), apt_autoremove_in=(),
        path_retention=(PathRetentionRule(root=str(root), globs=("*.log",), days=14),))
    return cfg, files


async def test_host_steps_dry_run_then_real(tmp_path: Path) -> None:
    cfg, files = host_tree(tmp_path)
    runner, _hold = make_runner(tmp_path, "unix:///nonexistent.sock", cfg)
    j_old_bytes = files["j_old"].stat().st_blocks * 512
    dry = await runner.run("cleanup", mode="standard", dry_run=True)
    assert all(p.exists() for p in files.values())
    real = await runner.run("cleanup", mode="standard")
    planned, done = steps(dry), steps(real)
    remaining = {k for k, p in files.items() if p.exists()}
    assert remaining == {"j_mid", "j_new", "j_active", "new_log", "old_other", "outside_log"}
    assert planned["journal_vacuum"]["freed_bytes"] == j_old_bytes
    # journalctl prints sizes truncated to 0.1 of a unit (KiB here): up to 102 bytes short
    assert 0 <= j_old_bytes - done["journal_vacuum"]["freed_bytes"] < 103
    assert done["apt"]["freed_bytes"] == planned["apt"]["freed_bytes"] >= 190_000
    assert done["path_retention"]["freed_bytes"] == planned["path_retention"]["freed_bytes"]
    assert done["path_retention"]["freed_bytes"] >= 70_000
    pnpm = done["pnpm_store"]
    if which("pnpm") is None:
        assert (pnpm["status"], pnpm["detail"]) == ("skipped", "pnpm is not installed")
    assert real["status"] == "ok", real


async def test_hold_refuses_real_run_not_dry_run(tmp_path: Path) -> None:
    cfg, files = host_tree(tmp_path)
    runner, hold = make_runner(tmp_path, "unix:///nonexistent.sock", cfg)
    hold.set("disk investigation", by="test")
    with pytest.raises(Locked):
        await runner.run("cleanup", mode="standard")
    dry = await runner.run("cleanup", mode="standard", dry_run=True)
    assert dry["status"] == "ok"
    assert all(p.exists() for p in files.values())


async def test_second_cleanup_conflicts(tmp_path: Path) -> None:
    cfg, _files = host_tree(tmp_path)
    runner, _hold = make_runner(tmp_path, "unix:///nonexistent.sock", cfg)
    first = await runner.run("cleanup", mode="standard", wait=False)
    with pytest.raises(Conflict) as refused:
        await runner.run("cleanup", mode="standard", dry_run=True)
    assert refused.value.details["running_run_id"] == first["id"]
    for _ in range(600):  # let the first run finish before the temp dir goes
        if (await runner.record(first["id"]))["status"] != "running":
            break
        await asyncio.sleep(0.05)
    assert (await runner.record(first["id"]))["status"] == "ok"
