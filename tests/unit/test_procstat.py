"""/proc/stat parsing and the steal/iowait shares (man 5 proc)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.host.model import HostReadError
from agent.host.procstat import (
    CpuTimes,
    StatSnapshot,
    cpu_sample,
    cpu_shares,
    parse_stat,
    read_stat,
)

STAT = """\
cpu  2686 10 1859 38856 213 0 33 6 0 0
cpu0 937 0 679 20180 8 0 7 2 0 0
cpu1 1749 10 1180 18676 204 0 26 4 0 0
intr 138595 0 0
ctxt 314904
btime 1700000000
"""


def test_parse_stat_reads_the_aggregate_line_and_counts_cores() -> None:
    snap = parse_stat(STAT)
    assert snap.cores == 2
    assert snap.times == CpuTimes(user=2686, nice=10, system=1859, idle=38856, iowait=213,
                                  irq=0, softirq=33, steal=6, guest=0, guest_nice=0)


def test_old_kernel_line_without_steal_and_guest_pads_zeros() -> None:
    snap = parse_stat("cpu 100 0 50 1000\ncpu0 100 0 50 1000\n")
    assert snap.times.steal == 0 and snap.times.guest_nice == 0
    assert snap.times.idle == 1000


def test_no_cpuN_lines_falls_back_to_os_cpu_count() -> None:
    assert parse_stat("cpu 1 2 3 4 5 6 7 8 0 0\n").cores == (os.cpu_count() or 1)


@pytest.mark.parametrize("text", ["intr 1 2 3\n", "cpu 1 2 x 4 5\n", "cpu 1 2\n", ""])
def test_malformed_stat_raises_host_read_error(text: str) -> None:
    with pytest.raises(HostReadError) as info:
        parse_stat(text)
    assert info.value.details == {"source": "/proc/stat"}


def times(**fields: int) -> CpuTimes:
    return CpuTimes(**fields)


def test_guest_time_is_not_counted_twice() -> None:
    # user 600 already contains guest 500 (man 5 proc).  The right total is
    # 600+100+200+100 = 1000 -> steal 10 %; adding guest again would give 1500 -> 6.67 %.
    prev = times()
    cur = times(user=600, system=100, idle=200, steal=100, guest=500, guest_nice=0)
    assert cpu_shares(prev, cur) == (10.0, 0.0)


def test_guest_nice_is_not_counted_twice() -> None:
    cur = times(nice=300, idle=500, iowait=100, steal=100, guest_nice=300)
    assert cpu_shares(times(), cur) == (10.0, 10.0)


def test_shares_of_an_ordinary_window() -> None:
    prev = times(user=1000, system=500, idle=8000, iowait=100, steal=50)
    cur = times(user=1100, system=550, idle=8300, iowait=130, steal=70)
    # deltas: 100 + 50 + 300 + 30 + 20 = 500 -> steal 4 %, iowait 6 %
    assert cpu_shares(prev, cur) == (4.0, 6.0)


def test_zero_delta_gives_zero_not_division_error() -> None:
    same = times(user=5, idle=10, steal=3)
    assert cpu_shares(same, same) == (0.0, 0.0)


def test_every_counter_going_backwards_gives_clamped_zero() -> None:
    prev = times(user=5000, system=900, idle=90000, iowait=300, steal=700)
    cur = times(user=10, system=5, idle=100, iowait=1, steal=1)
    assert cpu_shares(prev, cur) == (0.0, 0.0)


def test_a_backwards_steal_counter_is_zero_not_negative() -> None:
    prev = times(user=100, idle=1000, steal=500)
    cur = times(user=200, idle=1900, steal=400)
    steal, iowait = cpu_shares(prev, cur)
    assert steal == 0.0 and iowait == 0.0


def test_a_backwards_idle_counter_does_not_inflate_the_total() -> None:
    # idle went back 100: clamped to 0, so the total is 50 + 50 and steal is 50 %.
    prev = times(user=100, idle=1000, steal=10)
    cur = times(user=150, idle=900, steal=60)
    assert cpu_shares(prev, cur) == (50.0, 0.0)


def test_cpu_sample_carries_cores_and_window() -> None:
    prev = StatSnapshot(times(idle=900, steal=100), 4)
    cur = StatSnapshot(times(idle=1800, steal=200, iowait=0), 4)
    sample = cpu_sample(prev, cur, 1.00049)
    assert (sample.cores, sample.steal_percent, sample.window_s) == (4, 10.0, 1.0)


def test_read_stat_from_a_temp_tree(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text(STAT)
    assert read_stat(tmp_path).times.steal == 6


def test_read_stat_missing_file_raises_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_stat(tmp_path)


def test_real_proc_stat_parses() -> None:
    snap = read_stat("/proc")
    assert 1 <= snap.cores <= (os.cpu_count() or 1)
    assert snap.times.idle > 0
