"""/proc/meminfo parsing, the MemAvailable fallback and swap used."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.host.meminfo import available_bytes, memory_sample, parse_meminfo, read_meminfo
from agent.host.model import HostReadError

KIB = 1024

MEMINFO = """\
MemTotal:       16384000 kB
MemFree:         2000000 kB
MemAvailable:    9000000 kB
Buffers:          100000 kB
Cached:          5000000 kB
SwapCached:        40000 kB
Active(file):    3000000 kB
Inactive(file):  2500000 kB
SReclaimable:     400000 kB
SwapTotal:       4000000 kB
SwapFree:        2500000 kB
HugePages_Total:       8
Hugepagesize:       2048 kB
"""


def test_values_are_bytes_and_unitless_lines_are_counts() -> None:
    fields = parse_meminfo(MEMINFO)
    assert fields["MemTotal"] == 16384000 * KIB
    assert fields["Hugepagesize"] == 2048 * KIB
    assert fields["HugePages_Total"] == 8


def test_lines_without_a_space_after_the_colon() -> None:
    fields = parse_meminfo("MemTotal:16384 kB\nMemFree:1024 kB\nHugePages_Free:3\n")
    assert fields == {"MemTotal": 16384 * KIB, "MemFree": 1024 * KIB, "HugePages_Free": 3}


def test_unparsable_lines_are_skipped() -> None:
    assert parse_meminfo("garbage\nFoo: bar kB\nMemFree: 1 kB\n") == {"MemFree": KIB}


def test_sample_with_mem_available() -> None:
    sample = memory_sample(parse_meminfo(MEMINFO))
    assert sample.total_bytes == 16384000 * KIB
    assert sample.available_bytes == 9000000 * KIB
    assert sample.swap_total_bytes == 4000000 * KIB
    assert sample.swap_used_bytes == 1500000 * KIB
    assert sample.swap_cached_bytes == 40000 * KIB


def without(text: str, key: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith(key + ":"))


def test_missing_mem_available_uses_the_lru_estimate() -> None:
    fields = parse_meminfo(without(MEMINFO, "MemAvailable"))
    # MemFree + Active(file) + Inactive(file) + SReclaimable
    assert available_bytes(fields) == (2000000 + 3000000 + 2500000 + 400000) * KIB


def test_mem_available_zero_uses_the_lru_estimate() -> None:
    fields = parse_meminfo(MEMINFO.replace("MemAvailable:    9000000", "MemAvailable:0"))
    assert fields["MemAvailable"] == 0
    assert available_bytes(fields) == 7900000 * KIB


def test_without_the_lru_split_uses_free_buffers_cached() -> None:
    text = without(without(MEMINFO, "MemAvailable"), "Active(file)")
    assert available_bytes(parse_meminfo(text)) == (2000000 + 100000 + 5000000) * KIB


def test_last_resort_is_mem_free() -> None:
    assert available_bytes({"MemFree": 5}) == 5


def test_swap_free_above_total_is_clamped_to_zero_used() -> None:
    text = MEMINFO.replace("SwapFree:        2500000", "SwapFree:        4000004")
    assert memory_sample(parse_meminfo(text)).swap_used_bytes == 0


def test_no_swap() -> None:
    text = MEMINFO.replace("SwapTotal:       4000000", "SwapTotal: 0").replace(
        "SwapFree:        2500000", "SwapFree: 0")
    sample = memory_sample(parse_meminfo(text))
    assert (sample.swap_total_bytes, sample.swap_used_bytes) == (0, 0)


def test_missing_required_field_raises() -> None:
    with pytest.raises(HostReadError, match="SwapCached"):
        memory_sample(parse_meminfo(without(MEMINFO, "SwapCached")))


def test_read_meminfo_from_a_temp_tree(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text(MEMINFO)
    assert read_meminfo(tmp_path).swap_used_bytes == 1500000 * KIB


def test_real_meminfo_matches_free() -> None:
    import subprocess

    sample = read_meminfo("/proc")
    mem, swap = (line.split() for line in
                 subprocess.run(["free", "-b"], capture_output=True, text=True,
                                check=True).stdout.splitlines()[1:3])
    assert sample.total_bytes == int(mem[1])
    assert sample.swap_total_bytes == int(swap[1])
    # "available" moves between the two reads; 64 MiB is plenty for a quiet test run.
    assert abs(sample.available_bytes - int(mem[6])) < 64 * 2**20
