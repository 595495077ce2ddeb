"""Found by a breaking session: per-container writes on stacked disks, odd counter files,
and Prometheus answers that are not what the API documents (a local aiohttp stand-in)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.api.handlers.trend import trend_data
from agent.config import Config, IoConfig, PrometheusConfig
from agent.containers.blockstack import block_holders
from agent.containers.iorate import IoSampler
from agent.containers.iowrite import RunningContainer
from agent.errors import UpstreamTimeout, UpstreamUnavailable
from tests.unit.test_cgroupio import Clock

CID = "a" * 64
OTHER = "b" * 64


class Listing:
    """The Docker side as data (the sampler is under test)."""

    def __init__(self, *containers: RunningContainer) -> None:
        self.containers = list(containers)

    async def running(self) -> list[RunningContainer]:
        return list(self.containers)

    async def pid_of(self, container_id: str) -> int:
        return 0




def lvm_sysfs(root: Path) -> Path:
    """A sysfs like a Debian LVM install: disk vda (254:0), partition vda2 (254:2) a PV
    held by dm-0 (253:0), the LV docker writes to; vda1 (254:1) plain."""
    devices = root / "devices"
    for rel, dev in (("vda", "254:0"), ("vda/vda1", "254:1"), ("vda/vda2", "254:2"),
                     ("dm-0", "253:0")):
        (devices / rel / "holders").mkdir(parents=True)
        (devices / rel / "dev").write_text(dev + "\n")
    for part in ("vda1", "vda2"):
        (devices / "vda" / part / "partition").write_text(part[-1] + "\n")
    (devices / "vda/vda2/holders/dm-0").symlink_to(devices / "dm-0")
    (devices / "dm-0/slaves").mkdir()
    block = root / "class" / "block"
    block.mkdir(parents=True)
    for name, rel in (("vda", "vda"), ("vda1", "vda/vda1"), ("vda2", "vda/vda2"),
                      ("dm-0", "dm-0")):
        (block / name).symlink_to(devices / rel)
    return root


def test_block_holders_reads_partition_holders_onto_the_disk(tmp_path: Path) -> None:
    assert block_holders(str(lvm_sysfs(tmp_path / "sys"))) == {"254:0": frozenset({"253:0"})}
    assert block_holders(str(tmp_path / "no-sys")) == {}


def v2(root: Path, cid: str, body: bytes) -> None:
    d = root / f"system.slice/docker-{cid}.scope"
    d.mkdir(parents=True, exist_ok=True)
    (d / "io.stat").write_bytes(body)


def v1(root: Path, cid: str, body: str) -> None:
    d = root / f"blkio/docker/{cid}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "blkio.throttle.io_service_bytes").write_text(body)


def v1_body(lv: int, disk: int) -> str:
    """As netdata#1157 showed a v1 host with LVM: the disk and the LV both count a write."""
    lines = []
    for dev, n in (("254:0", disk), ("253:0", lv)):
        lines += [f"{dev} Read 0", f"{dev} Write {n}", f"{dev} Sync {n}", f"{dev} Async 0",
                  f"{dev} Total {n}"]
    return "\n".join([*lines, f"Total {lv + disk}"]) + "\n"


def sampler(root: Path, sys_root: Path, listing: Listing, clock: Clock) -> IoSampler:
    return IoSampler(IoConfig(), listing, interval_s=10, cgroup_root=str(root),
                     proc_root=str(root / "no-proc"), sys_root=str(sys_root), clock=clock)


@pytest.mark.parametrize("version", [1, 2])
async def test_a_write_through_lvm_is_counted_once(tmp_path: Path, version: int) -> None:
    root, clock = tmp_path / "cgroup", Clock()
    io = sampler(root, lvm_sysfs(tmp_path / "sys"), Listing(RunningContainer(CID, "db")), clock)

    def counters(lv: int, disk: int) -> None:
        if version == 2:
            v2(root, CID, f"254:0 rbytes=0 wbytes={disk} rios=0 wios=1\n"
                          f"253:0 rbytes=0 wbytes={lv} rios=0 wios=1\n".encode())
        else:
            v1(root, CID, v1_body(lv, disk))

    counters(lv=4000, disk=4000)
    assert await io.sample_once() == []  # the baseline
    counters(lv=5000, disk=5500)  # 1000 B into the LV (seen on both), 500 B onto vda1
    clock.now += 10
    (row,) = await io.sample_once()
    assert row.write_bytes_per_s == 150.0  # 1500 B written, not 2500


async def test_a_bad_byte_in_one_counter_file_drops_that_container_only(tmp_path: Path) -> None:
    root, clock = tmp_path / "cgroup", Clock()
    io = sampler(root, tmp_path / "no-sys",
                 Listing(RunningContainer(CID, "db"), RunningContainer(OTHER, "web")), clock)
    v2(root, CID, b"8:0 rbytes=0 wbytes=100\n")
    v2(root, OTHER, b"8:0 rbytes=0 wbytes=100\n")
    await io.sample_once()
    v2(root, CID, b"8:0 rbytes=0 wbytes=\xff00\n")
    v2(root, OTHER, b"8:0 rbytes=0 wbytes=1100\n")
    clock.now += 10
    assert [(r.name, r.write_bytes_per_s) for r in await io.sample_once()] == [("web", 100.0)]


# -- Prometheus answers that are not the API's -----------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def stand_in() -> AsyncIterator[Callable[[Handler], Awaitable[Config]]]:
    """Start a local server answering every path with ``handler``; gives its Config."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> Config:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return replace(Config(), prometheus=PrometheusConfig(url=f"http://127.0.0.1:{port}",
                                                             timeout_s=1.0))
    yield start
    for runner in runners:
        await runner.cleanup()


def answering(body: str, status: int = 200,
              content_type: str = "application/json") -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=body, status=status, content_type=content_type)
    return handler


async def test_an_html_page_is_a_bad_response_not_unreachable(stand_in: Any) -> None:
    cfg = await stand_in(answering("<html>502 Bad Gateway</html>", 502, "text/html"))
    with pytest.raises(UpstreamUnavailable) as exc:
        await trend_data(cfg, "steal", "1h", now=time.time())
    assert exc.value.details["error_type"] == "bad_response"
    assert exc.value.details["http_status"] == 502


@pytest.mark.parametrize("body", [
    '{"status": "success"}',
    '{"status": "success", "data": null}',
    '{"status": "success", "data": {"resultType": "vector", "result": '
    '[{"metric": {}, "value": [1, "1"]}]}}',
    '{"status": "success", "data": {"resultType": "matrix", "result": '
    '[{"metric": {}, "values": [[1, "abc"]]}]}}',
    '{"status": "success", "data": {"resultType": "matrix", "result": '
    '[{"metric": {}, "values": [[1]]}]}}',
])
async def test_a_success_without_a_matrix_is_503_not_internal(stand_in: Any, body: str) -> None:
    cfg = await stand_in(answering(body))
    with pytest.raises(UpstreamUnavailable) as exc:
        await trend_data(cfg, "memory", "1h", now=time.time())
    assert exc.value.details["error_type"] == "bad_response"


async def test_an_answer_too_large_is_refused_not_held_in_memory(stand_in: Any) -> None:
    chunk = b" " * 1024 * 1024

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await resp.write(b'{"status": "success", "data": {"resultType": "matrix", "result": [')
        for _ in range(200):  # 200 MiB of whitespace: valid JSON, never finished
            await resp.write(chunk)
        return resp

    cfg = await stand_in(huge)
    cfg = replace(cfg, prometheus=replace(cfg.prometheus, timeout_s=30.0))
    with pytest.raises(UpstreamUnavailable) as exc:
        await trend_data(cfg, "steal", "1h", now=time.time())
    assert exc.value.details["error_type"] == "too_large"


async def test_a_body_that_trickles_is_a_timeout(stand_in: Any) -> None:
    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        for _ in range(100):
            await resp.write(b" ")
            await asyncio.sleep(0.1)
        return resp

    cfg = await stand_in(trickle)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await trend_data(cfg, "steal", "1h", now=time.time())
    assert time.monotonic() - started < 3


# -- the textfile: a symlink planted in the folder -------------------------------------

def test_a_planted_symlink_is_never_followed(tmp_path: Path) -> None:
    """A user who can write the textfile folder (not Debian's default, root's 0755) plants
    a symlink at the temporary file's name: root must not write or chmod its target."""
    import os
    import threading

    from agent.metrics_export import Snapshot, render, write_textfile

    folder, victim = tmp_path / "textfile", tmp_path / "shadow"
    folder.mkdir()
    victim.write_text("secret\n")
    victim.chmod(0o600)
    target = folder / "vm-agent.prom"
    for name in (f"{target}.staging", f"{target}.staging.{os.getpid()}.{threading.get_ident()}",
                 f"{target}.{os.getpid()}.{threading.get_ident()}"):
        Path(name).symlink_to(victim)
    write_textfile(str(target), Snapshot(score=42))
    assert victim.read_text() == "secret\n" and victim.stat().st_mode & 0o777 == 0o600
    assert not target.is_symlink() and target.read_bytes() == render(Snapshot(score=42))
    assert target.stat().st_mode & 0o777 == 0o644


def test_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    """ENOSPC midway (a 64 KiB tmpfs): the old textfile stays whole, nothing is left."""
    import subprocess

    from agent.metrics_export import Snapshot, render, write_textfile

    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        target = mnt / "vm-agent.prom"
        write_textfile(str(target), Snapshot(score=1))
        (mnt / "filler").write_bytes(b"x" * (64 * 1024 - 4096 - target.stat().st_size))
        big = Snapshot(projected={f"c{i:05d}": float(i) for i in range(2000)})
        with pytest.raises(OSError):
            write_textfile(str(target), big)
        assert target.read_bytes() == render(Snapshot(score=1))
        assert sorted(p.name for p in mnt.iterdir()) == ["filler", "vm-agent.prom"]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
