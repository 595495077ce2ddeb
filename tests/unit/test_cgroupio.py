"""cgroup write counters (temp cgroup trees in both versions and layouts) and the io sampler."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.clifmt import render
from agent.config import IoConfig
from agent.configload import load_config
from agent.containers.cgroupio import (
    CgroupLocation,
    CgroupReadError,
    locate,
    parse_io_stat,
    parse_proc_cgroup,
    parse_service_bytes,
    read_counter,
)
from agent.containers.iorate import IoSampler
from agent.containers.iowrite import (
    IoRate,
    Reading,
    RunningContainer,
    io_level,
    projected_per_day,
    rate_between,
    worst_first,
)
from agent.errors import ConfigError
from agent.notify.events import AlertEvent

CID = "a" * 64
OTHER = "b" * 64
IO_STAT = ("8:0 rbytes=4096 wbytes=1000 rios=1 wios=2 dbytes=0 dios=0\n"
           "253:1 rbytes=0 wbytes=234 rios=0 wios=1 dbytes=0 dios=0\n")


def v1_text(write: int, *, device: str = "254:0") -> str:
    return (f"{device} Read 4096\n{device} Write {write}\n{device} Sync {write}\n"
            f"{device} Async 0\n{device} Discard 0\n{device} Total {write + 4096}\n"
            f"Total {write + 4096}\n")


def make(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


# -- parsers ------------------------------------------------------------------------------

def test_io_stat_sums_wbytes_over_devices() -> None:
    assert parse_io_stat(IO_STAT) == 1234
    assert parse_io_stat("") == 0


def test_service_bytes_sums_write_lines_only() -> None:
    two_devices = v1_text(100) + v1_text(50, device="8:16")
    assert parse_service_bytes(two_devices) == 150
    assert parse_service_bytes("Total 0\n") == 0


def test_proc_cgroup_v2_and_v1_blkio_lines() -> None:
    text = ("12:cpu,cpuacct:/docker/x\n7:blkio:/docker/" + CID + "\n"
            "0::/system.slice/docker-" + CID + ".scope\n")
    assert parse_proc_cgroup(text) == ("/system.slice/docker-" + CID + ".scope",
                                       "/docker/" + CID)
    assert parse_proc_cgroup("0::/\n") == ("/", None)


# -- locating and reading --------------------------------------------------------------

@pytest.mark.parametrize("layout", [f"system.slice/docker-{CID}.scope", f"docker/{CID}",
                                    f"outer/docker/{CID}", f"a/b/docker/{CID}"])
def test_v2_layouts_without_a_pid(tmp_path: Path, layout: str) -> None:
    make(tmp_path / f"docker/{OTHER}", {"io.stat": "8:0 wbytes=9\n"})
    where = make(tmp_path / layout, {"io.stat": IO_STAT})
    loc = locate(CID, None, cgroup_root=str(tmp_path))
    assert loc == CgroupLocation(2, where)
    assert read_counter(loc).write_bytes == 1234


def test_v1_cgroupfs_layout(tmp_path: Path) -> None:
    where = make(tmp_path / f"blkio/docker/{CID}",
                 {"blkio.throttle.io_service_bytes": v1_text(777),
                  "blkio.throttle.io_service_bytes_recursive": v1_text(777)})
    loc = locate(CID, None, cgroup_root=str(tmp_path))
    assert loc == CgroupLocation(1, where)
    assert read_counter(loc).write_bytes == 777


@pytest.mark.parametrize(("plain", "recursive", "expected"), [
    ("Total 0\n", v1_text(5000), 5000),   # kernel fills only the _recursive file
    (v1_text(5000), "Total 0\n", 5000),   # only the plain file
    (None, v1_text(42), 42),              # the plain file missing altogether
    (v1_text(7), None, 7),
])
def test_v1_reads_both_files_and_takes_the_larger(tmp_path: Path, plain: str | None,
                                                  recursive: str | None, expected: int) -> None:
    files = {name: text for name, text in (("blkio.throttle.io_service_bytes", plain),
                                            ("blkio.throttle.io_service_bytes_recursive",
                                             recursive)) if text is not None}
    where = make(tmp_path / f"blkio/system.slice/docker-{CID}.scope", files)
    assert read_counter(CgroupLocation(1, where)).write_bytes == expected


def test_pid_cgroup_wins_over_layout_and_handles_a_custom_parent(tmp_path: Path) -> None:
    root, proc = tmp_path / "cg", tmp_path / "proc"
    make(root / f"docker/{CID}", {"io.stat": "8:0 wbytes=1\n"})  # a stale lookalike
    custom = make(root / "my-parent/ctr", {"io.stat": "8:0 wbytes=99\n"})
    make(proc / "4242", {"cgroup": "0::/my-parent/ctr\n"})
    loc = locate(CID, 4242, cgroup_root=str(root), proc_root=str(proc))
    assert loc == CgroupLocation(2, custom)


def test_hybrid_host_falls_back_from_unified_to_blkio(tmp_path: Path) -> None:
    """cgroup v1 with a v2 'unified' mount that has no io controller (as on the test VM)."""
    root, proc = tmp_path / "cg", tmp_path / "proc"
    make(root / f"unified/docker/{CID}", {"cgroup.procs": "4242\n"})  # no io.stat
    v1 = make(root / f"blkio/docker/{CID}", {"blkio.throttle.io_service_bytes": v1_text(8)})
    make(proc / "4242", {"cgroup": f"7:blkio:/docker/{CID}\n0::/docker/{CID}\n"})
    loc = locate(CID, 4242, cgroup_root=str(root), proc_root=str(proc))
    assert loc == CgroupLocation(1, v1)
    assert loc.source == "blkio.throttle.io_service_bytes"


def test_nothing_to_find(tmp_path: Path) -> None:
    make(tmp_path / f"docker/{CID}", {"cgroup.procs": ""})  # cgroup without io counters
    assert locate(CID, 999999, cgroup_root=str(tmp_path), proc_root=str(tmp_path)) is None
    assert locate(OTHER, None, cgroup_root=str(tmp_path / "missing")) is None


def test_missing_or_bad_files_raise(tmp_path: Path) -> None:
    where = make(tmp_path / f"docker/{CID}", {"io.stat": IO_STAT})
    (where / "io.stat").write_text("8:0 wbytes=lots\n")
    with pytest.raises(CgroupReadError, match="cannot parse"):
        read_counter(CgroupLocation(2, where))
    (where / "io.stat").unlink()
    with pytest.raises(CgroupReadError, match="no such file"):
        read_counter(CgroupLocation(2, where))
    with pytest.raises(CgroupReadError, match="no blkio throttle counters"):
        read_counter(CgroupLocation(1, where))
    shutil.rmtree(where)
    with pytest.raises(CgroupReadError):
        read_counter(CgroupLocation(2, where))


def test_a_recreated_cgroup_has_another_incarnation(tmp_path: Path) -> None:
    where = make(tmp_path / f"docker/{CID}", {"io.stat": IO_STAT})
    keep = make(tmp_path / "keep", {})  # holds on to the inode number while we recreate
    first = read_counter(CgroupLocation(2, where))
    where.rename(keep / "old")
    make(where, {"io.stat": IO_STAT})
    assert read_counter(CgroupLocation(2, where)).incarnation != first.incarnation


# -- rates, projection, levels ---------------------------------------------------------

def test_rate_and_projection_math() -> None:
    rate = rate_between(Reading(1_000_000, 1, 100.0), Reading(3_000_000, 1, 110.0))
    assert rate == (200_000.0, 10.0)
    assert projected_per_day(200_000.0) == 17_280_000_000  # 200 kB/s x 86400 s


@pytest.mark.parametrize(("before", "now"), [
    (None, Reading(10, 1, 5.0)),                       # no baseline yet
    (Reading(5_000, 1, 1.0), Reading(10, 1, 11.0)),     # counter went down: restarted
    (Reading(10, 1, 1.0), Reading(5_000, 2, 11.0)),     # same count, new cgroup inode
    (Reading(10, 1, 1.0), Reading(20, 1, 1.0)),         # no time passed
])
def test_no_rate_without_a_comparable_baseline(before: Reading | None, now: Reading) -> None:
    assert rate_between(before, now) is None


@pytest.mark.parametrize(("projected", "level"), [
    (0, "OK"), (20e9, "OK"), (20e9 + 1, "WARN"), (40e9, "WARN"), (40e9 + 1, "CRIT"),
])
def test_levels_at_exact_boundaries(projected: float, level: str) -> None:
    assert io_level(projected, IoConfig()) == level


def test_worst_first() -> None:
    def row(name: str, level: str, projected: float) -> IoRate:
        return IoRate(name, name, projected / 86400, projected, level, 10, "io.stat")  # type: ignore[arg-type]
    rows = [row("a", "OK", 1e9), row("b", "CRIT", 50e9), row("c", "WARN", 25e9),
            row("d", "CRIT", 90e9), row("e", "OK", 2e9)]
    assert [r.name for r in worst_first(rows)] == ["d", "b", "c", "e", "a"]


def test_config_section(tmp_path: Path) -> None:
    assert (IoConfig().warn_bytes_per_day, IoConfig().crit_bytes_per_day) == (20e9, 40e9)
    path = tmp_path / "c.yaml"
    path.write_text("io:\n  warn_bytes_per_day: 5.0e9\n  crit_bytes_per_day: 6.0e9\n")
    assert load_config(path, environ={}).io == IoConfig(5e9, 6e9)
    path.write_text("io:\n  warn_bytes_per_day: 5.0e9\n  crit_bytes_per_day: 5.0e9\n")
    with pytest.raises(ConfigError, match="crit_bytes_per_day"):
        load_config(path, environ={})


# -- the sampler over a temp tree ------------------------------------------------------

class Listing:
    """The Docker side, as data: who runs, with which pid (the sampler is under test)."""

    def __init__(self, *containers: RunningContainer) -> None:
        self.containers = list(containers)
        self.down = False
        self.inspected: list[str] = []

    async def running(self) -> list[RunningContainer]:
        if self.down:
            raise ConnectionRefusedError("docker is down")
        return list(self.containers)

    async def pid_of(self, container_id: str) -> int:
        self.inspected.append(container_id)
        return 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write(root: Path, cid: str, wbytes: int) -> None:
    make(root / f"system.slice/docker-{cid}.scope", {"io.stat": f"8:0 rbytes=0 wbytes={wbytes}\n"})


def sampler_for(root: Path, listing: Listing, clock: Clock,
                events: list[AlertEvent]) -> IoSampler:
    async def emit(event: AlertEvent) -> None:
        events.append(event)
    return IoSampler(IoConfig(), listing, interval_s=10, cgroup_root=str(root),
                     proc_root=str(root / "no-proc"), emit=emit, clock=clock)


async def test_sampler_rates_levels_and_alerts_on_rise_only(tmp_path: Path) -> None:
    listing = Listing(RunningContainer(CID, "db"), RunningContainer(OTHER, "web"))
    clock, events = Clock(), []
    io = sampler_for(tmp_path, listing, clock, events)
    write(tmp_path, CID, 0)
    write(tmp_path, OTHER, 0)
    assert await io.sample_once() == []  # baselines only
    steps = [(300e6, 1e6, "db"), (600e6, 2e6, "db"), (600e6, 3e6, "web"), (1200e6, 4e6, "db")]
    for db, web, worst in steps:
        clock.now += 10
        write(tmp_path, CID, int(db))
        write(tmp_path, OTHER, int(web))
        rows = await io.sample_once()
        assert rows[0].name == worst and len(rows) == 2
    # db: 30 MB/s (2.6 TB/day, CRIT), 30 MB/s (still CRIT), 0 (OK), 60 MB/s (CRIT again)
    assert [(e.kind, e.subject, e.level) for e in events] == [
        ("io.write_rate", "db", "CRIT"), ("io.write_rate", "db", "CRIT")]
    assert rows[0].write_bytes_per_s == pytest.approx(60e6)
    assert rows[1].to_wire() == {"name": "web", "id": OTHER[:12], "write_bytes_per_s": 100000.0,
                                 "projected_bytes_per_day": 8_640_000_000, "level": "OK",
                                 "window_s": 10.0, "source": "io.stat"}
    assert listing.inspected == [CID, OTHER]  # inspected once, when first seen
    assert await io.latest() == rows


async def test_sampler_restart_gives_no_negative_rate(tmp_path: Path) -> None:
    listing, clock, events = Listing(RunningContainer(CID, "db")), Clock(), []
    io = sampler_for(tmp_path, listing, clock, events)
    write(tmp_path, CID, 50_000_000)
    await io.sample_once()
    shutil.rmtree(tmp_path / f"system.slice/docker-{CID}.scope")  # stopped...
    clock.now += 10
    assert await io.sample_once() == []
    write(tmp_path, CID, 1_000)  # ... and started again: a new cgroup, counter from 0
    clock.now += 10
    assert await io.sample_once() == []  # new baseline
    write(tmp_path, CID, 11_000)
    clock.now += 10
    rows = await io.sample_once()
    assert [(r.name, r.write_bytes_per_s) for r in rows] == [("db", 1000.0)]
    write(tmp_path, CID, 500)  # same cgroup, counter went down (reset): no negative rate
    clock.now += 10
    assert await io.sample_once() == []
    write(tmp_path, CID, 10_500)
    clock.now += 10
    assert [r.write_bytes_per_s for r in await io.sample_once()] == [1000.0]
    assert events == []


async def test_sampler_keeps_reading_known_containers_while_docker_is_down(
        tmp_path: Path) -> None:
    listing, clock = Listing(RunningContainer(CID, "db")), Clock()
    io = sampler_for(tmp_path, listing, clock, [])
    write(tmp_path, CID, 0)
    await io.sample_once()
    listing.down = True
    clock.now += 10
    write(tmp_path, CID, 10_000)
    rows = await io.sample_once()
    assert [(r.name, r.write_bytes_per_s) for r in rows] == [("db", 1000.0)]
    assert io.last_error is not None and "docker is down" in io.last_error


async def test_latest_before_start_is_an_error(tmp_path: Path) -> None:
    io = sampler_for(tmp_path, Listing(), Clock(), [])
    with pytest.raises(Exception, match="not started"):
        await io.latest()


def test_cli_rendering() -> None:
    rows = [IoRate("db", CID, 30e6, 30e6 * 86400, "CRIT", 10, "io.stat").to_wire(),
            IoRate("web", OTHER, 0, 0, "OK", 10, "io.stat").to_wire()]
    assert render("io", rows).splitlines() == [
        "container  writes     projected   level",
        "db         30.0 MB/s  2.6 TB/day  CRIT",
        "web        0 B/s      0 B/day     OK"]
    assert "second sample" in render("io", [])


async def test_unlocated_container_is_inspected_again_only_after_a_minute(
        tmp_path: Path) -> None:
    listing, clock = Listing(RunningContainer(CID, "db")), Clock()
    io = sampler_for(tmp_path, listing, clock, [])
    for _ in range(3):  # no cgroup yet: one inspect, then none for a minute
        await io.sample_once()
        clock.now += 10
    assert listing.inspected == [CID]
    write(tmp_path, CID, 0)
    clock.now += 60
    await io.sample_once()
    assert listing.inspected == [CID, CID]
    clock.now += 10
    write(tmp_path, CID, 1000)
    assert [r.write_bytes_per_s for r in await io.sample_once()] == [100.0]
