"""Attacks on the cleanup's path_retention step (temp trees, no Docker, no root).

Each test is a defect found by trying to break the step as a user would:
overlapping rules, a rule root that is a symbolic link, a file another
process deletes between the walk and the unlink, names that are not UTF-8.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agent.config import CleanupConfig, CleanupModes, PathRetentionRule
from agent.jobs import cleanup_files as cf
from agent.jobs import cleanup_steps as host
from tests.integration.test_cleanup import old_file


def config(*rules: PathRetentionRule) -> CleanupConfig:
    return CleanupConfig(modes=CleanupModes(standard=("path_retention",)), path_retention=rules)


async def test_overlapping_rules_dry_run_equals_real_run(tmp_path: Path) -> None:
    """Two rules whose roots nest (or are equal) select the same file: the dry-run counted
    it twice, the real run deletes (and counts) it once."""
    root = tmp_path / "data"
    files = [old_file(root / "a.log", 8192, days=30), old_file(root / "sub" / "b.log", 8192,
                                                                   days=30)]
    cfg = config(PathRetentionRule(root=str(root), globs=("*.log",), days=14),
                 PathRetentionRule(root=str(root / "sub"), globs=("*.log",), days=7),
                 PathRetentionRule(root=str(root), globs=("*",), days=20))
    now = time.time()
    step = await host.plan_paths(cfg, "path_retention", now=now)
    assert step.detail.startswith("2 files")
    done = await host.run_paths(step)
    assert not any(f.exists() for f in files)
    assert done.status == "ok"
    assert done.freed_bytes == step.estimated_bytes == sum(8192 for _ in files)


async def test_symlinked_root_is_reported_not_silently_empty(tmp_path: Path) -> None:
    """A rule root that is a symbolic link: the walk never enters it, so the step said
    "0 files" as if the folder had nothing old; it now says why."""
    real = tmp_path / "real"
    kept = old_file(real / "pg.log", 4096, days=30)
    link = tmp_path / "logs"
    link.symlink_to(real, target_is_directory=True)
    other = old_file(tmp_path / "other" / "x.log", 4096, days=30)
    cfg = config(PathRetentionRule(root=str(link), globs=("*.log",), days=14),
                 PathRetentionRule(root=str(other.parent), globs=("*.log",), days=14))
    step = await host.plan_paths(cfg, "path_retention", now=time.time())
    assert f"{link} (a symbolic link, not followed)" in step.detail
    await host.run_paths(step)
    assert kept.exists() and not other.exists()
    with pytest.raises(host.Skip, match="symbolic link"):
        await host.plan_paths(config(cfg.path_retention[0]), "path_retention", now=time.time())


def test_file_deleted_by_someone_else_before_unlink_is_no_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A log rotator removes a file between the walk's stat and our unlink (the race is
    made certain by removing the file just before the real unlink): the file is gone as
    wanted, so it is neither an error (the step used to fail) nor counted as freed."""
    gone = old_file(tmp_path / "a.log", 4096, days=30)
    kept_going = old_file(tmp_path / "b.log", 4096, days=30)
    real_unlink = os.unlink

    def racing_unlink(name: str, *, dir_fd: int | None = None) -> None:
        if name == "a.log":
            real_unlink(gone)  # the other process wins the race
        real_unlink(name, dir_fd=dir_fd)

    monkeypatch.setattr(cf.os, "unlink", racing_unlink)
    deleted, errors = cf.delete_old(str(tmp_path), ("*.log",), time.time() - 86400)
    assert errors == []
    assert [f.rel for f in deleted] == ["b.log"]
    assert not gone.exists() and not kept_going.exists()


@pytest.mark.parametrize(("raw", "expected"), [
    (b"bad\xffname.log", "bad\\xffname.log"),
    (b"two\nlines.log", "two\\nlines.log"),
    (b"caf\xc3\xa9 \x1b[31m.log", "café \\x1b[31m.log"),
])
def test_shown_makes_any_name_safe_to_record(raw: bytes, expected: str) -> None:
    shown = cf.shown(os.fsdecode(raw))
    assert shown == expected
    shown.encode("utf-8")  # what SQLite and the journal need
