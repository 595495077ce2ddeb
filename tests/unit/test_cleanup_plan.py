"""The cleanup plan's pure parts: what each step selects, and the tool-output parsers."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agent.config import CleanupConfig, CleanupModes, PathRetentionRule
from agent.errors import ConfigError
from agent.jobs import cleanup_docker as dk
from agent.jobs import cleanup_files as cf

NOW = 1_790_000_000.0


def image(id_: str, *, tags: list[str] | None = None, created: float = 0, size: int = 100,
          shared: int = 0, labels: dict[str, str] | None = None) -> dict[str, object]:
    return {"Id": id_, "RepoTags": tags, "Created": created, "Size": size,
            "SharedSize": shared, "Labels": labels}


# --- Docker ---------------------------------------------------------------------------

def test_build_cache_selection_mirrors_buildkit() -> None:
    old, new = "2026-01-01T00:00:00.123456789Z", "2026-09-01T00:00:00Z"
    records = [
        {"ID": "old", "InUse": False, "Shared": False, "Type": "regular", "LastUsedAt": old},
        {"ID": "new", "InUse": False, "Shared": False, "Type": "regular", "LastUsedAt": new},
        {"ID": "never-used", "InUse": False, "Shared": False, "Type": "regular",
         "LastUsedAt": None},
        {"ID": "in-use", "InUse": True, "Shared": False, "Type": "regular", "LastUsedAt": old},
        {"ID": "shared", "InUse": False, "Shared": True, "Type": "regular", "LastUsedAt": old},
        {"ID": "frontend", "InUse": False, "Shared": False, "Type": "frontend",
         "LastUsedAt": old},
    ]
    cutoff = dk._timestamp("2026-06-01T00:00:00Z")
    aged = dk.select_build_cache(records, cutoff=cutoff, prune_all=False)
    assert [r["ID"] for r in aged] == ["old", "never-used"]
    every = dk.select_build_cache(records, cutoff=None, prune_all=True)
    assert [r["ID"] for r in every] == ["old", "new", "never-used", "shared", "frontend"]


def test_dangling_and_aged_selection() -> None:
    images = [
        image("dangling", tags=None, size=50),
        image("dangling-none", tags=["<none>:<none>"]),
        image("dangling-used", tags=None),
        image("aged", tags=["web:1"], created=NOW - 40 * 86400, size=300, shared=100),
        image("aged-used", tags=["api:1"], created=NOW - 40 * 86400),
        image("young", tags=["web:2"], created=NOW - 86400),
        image("kept-tag", tags=["ollama/ollama:latest"], created=NOW - 40 * 86400),
        image("kept-label", tags=["db:1"], created=NOW - 40 * 86400,
              labels={"vm-agent.keep": "1"}),
        image("kept-label-value", tags=["cache:1"], created=NOW - 40 * 86400,
              labels={"tier": "base"}),
        image("label-other-value", tags=["cache:2"], created=NOW - 40 * 86400,
              labels={"tier": "app"}),
    ]
    used = {"dangling-used", "aged-used"}
    assert [i["Id"] for i in dk.select_dangling(images, used)] == ["dangling", "dangling-none"]
    aged = dk.select_aged(images, used, cutoff=NOW - 30 * 86400, patterns=("ollama/*",),
                          labels=("vm-agent.keep", "tier=base"))
    assert [i["Id"] for i in aged] == ["aged", "label-other-value"]
    assert dk.unique_size(images[3]) == 200
    assert dk.unique_size(image("x", size=70, shared=-1)) == 70  # -1: not computed


def test_keep_match_reason() -> None:
    img = image("a", tags=["postgres:16.2"], labels={"vm-agent.keep": "yes"})
    assert dk.keep_match(img, patterns=("postgres:16*",), labels=()) == \
        "tag postgres:16.2 matches postgres:16*"
    assert dk.keep_match(img, patterns=(), labels=("vm-agent.keep",)) == "label vm-agent.keep"
    assert dk.keep_match(img, patterns=("redis:*",), labels=("vm-agent.keep=no",)) is None


# --- journal ------------------------------------------------------------------------------

def jf(seq: int, days_old: float, usage: int, seqnum_id: str = "a" * 32) -> cf.JournalFile:
    return cf.JournalFile(f"/j/system@{seq}.journal", usage,
                          int((NOW - days_old * 86400) * 1e6), seqnum_id, seq)


def test_journal_vacuum_by_time_and_size() -> None:
    files = [jf(3, 5, 300), jf(1, 60, 100), jf(2, 40, 200)]
    by_time = cf.journal_vacuum_plan(files, 1000, max_use=0, retention_s=30 * 86400, now=NOW)
    assert [f.seqnum for f in by_time] == [1, 2]
    # total 1000 (active files included) must get to <= 600: oldest first, 100 then 200 then 300
    by_size = cf.journal_vacuum_plan(files, 1000, max_use=600, retention_s=0, now=NOW)
    assert [f.seqnum for f in by_size] == [1, 2, 3]
    by_size = cf.journal_vacuum_plan(files, 1000, max_use=750, retention_s=0, now=NOW)
    assert [f.seqnum for f in by_size] == [1, 2]
    assert cf.journal_vacuum_plan(files, 1000, max_use=0, retention_s=0, now=NOW) == []


def test_journal_scan_reads_names_and_sizes(tmp_path: Path) -> None:
    rt = int((NOW - 10 * 86400) * 1e6)
    (tmp_path / f"system@{'ab' * 16}-{7:016x}-{rt:016x}.journal").write_bytes(b"x" * 9000)
    (tmp_path / "system.journal").write_bytes(b"x" * 5000)  # active: counted, never deleted
    (tmp_path / f"user-1000@{rt:016x}-{'0' * 16}.journal~").write_bytes(b"x" * 100)
    (tmp_path / "notes.txt").write_bytes(b"x" * 100_000)
    archived, total = cf.journal_scan(str(tmp_path))
    assert sorted((f.seqnum, f.realtime) for f in archived) == [(0, rt), (7, rt)]
    assert total == sum(os.stat(p).st_blocks * 512 for p in tmp_path.glob("*.journal*"))


@pytest.mark.parametrize(("output", "expected"), [
    ("Vacuuming done, freed 0B of archived journals from /var/log/journal.", 0),
    ("Deleted archived journal /x (8.0M).\nVacuuming done, freed 8.0M of archived journals "
     "from /var/log/journal/abc.\nVacuuming done, freed 1.2G of archived journals from "
     "/run/log/journal.", round(8 * 1024**2 + 1.2 * 1024**3)),
    ("Vacuuming done, freed 296.0K of archived journals from /tmp/j.", 296 * 1024),
    ("Vacuuming done, freed 512B of archived journals from /tmp/j.", 512),
])
def test_parse_freed(output: str, expected: int) -> None:
    assert cf.parse_freed(output) == expected


@pytest.mark.parametrize(("output", "expected"), [
    ("After this operation, 1,234 kB disk space will be freed.", 1_234_000),
    ("After this operation, 52.3 MB disk space will be freed.", 52_300_000),
    ("After this operation, 812 B disk space will be freed.", 812),
    ("0 upgraded, 0 newly installed, 0 to remove and 3 not upgraded.", 0),
])
def test_parse_apt_freed(output: str, expected: int) -> None:
    assert cf.parse_apt_freed(output) == expected


# --- path retention -----------------------------------------------------------------------

def aged(path: Path, days: float, size: int = 4096) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    t = time.time() - days * 86400
    os.utime(path, (t, t))
    return path


def test_old_files_never_follows_symlinks(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    aged(root / "a" / "old.log", 30)
    aged(root / "a" / "new.log", 1)
    aged(root / "old.dat", 30)
    aged(outside / "victim.log", 30)
    (root / "a" / "escape").symlink_to(outside)
    (root / "a" / "link.log").symlink_to(outside / "victim.log")
    linked = root / "hard.log"
    os.link(aged(root / "orig.bin", 30), linked)
    cutoff = time.time() - 14 * 86400
    found = {f.rel: f.freed for _fd, _n, f in cf.old_files(str(root), ("*.log",), cutoff)}
    assert set(found) == {"a/old.log", "hard.log"}
    assert found["hard.log"] == 0  # another hard link keeps the data
    deleted, errors = cf.delete_old(str(root), ("*.log",), cutoff)
    assert ({f.rel for f in deleted}, errors) == ({"a/old.log", "hard.log"}, [])
    assert (outside / "victim.log").exists() and (root / "a" / "link.log").is_symlink()


# --- config ---------------------------------------------------------------------------------

def test_modes_only_name_known_steps_once() -> None:
    with pytest.raises(ConfigError) as err:
        CleanupModes(standard=("apt", "apt")).validate()
    assert err.value.key == "standard"
    with pytest.raises(ConfigError) as err:
        PathRetentionRule(root="", globs=("*.log",)).validate()
    assert err.value.key == "root"
    assert replace(CleanupConfig(), image_age_days=1).modes.monthly[0] == "docker_build_cache"
