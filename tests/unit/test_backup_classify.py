"""agent.gitrepo on real git repos in temp dirs: each broken state, ahead/behind, cherry."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agent.config import BackupRepairConfig, BackupRepo
from agent.errors import ConfigError
from agent.gitrepo import (
    Git,
    divergence,
    inspect,
    missing_by_patch,
    reason,
    short,
    untracked_in_way,
)
from agent.jobs.backup_repair import _classify

ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
       "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def git(cwd: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run(["git", "-C", str(cwd), *args], env=ENV, capture_output=True,
                          text=True, check=False)
    if check and done.returncode:
        raise AssertionError(f"git {args}: {done.stderr}")
    return done.stdout.strip()


def commit(repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"{name}: {text[:20]}")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """(origin bare repo, a clone of it with one commit on main, pushed)."""
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    git(clone, "checkout", "-q", "-b", "main")
    commit(clone, "a.txt", "one\n")
    git(clone, "push", "-q", "origin", "main")
    return origin, clone


async def state(path: Path, remote: str = "origin", branch: str = "main") -> str | None:
    found = await inspect(Git(str(path), 30), remote=remote, branch=branch)
    return "rebasing" if found.rebasing else found.broken


async def test_a_clean_clone_is_not_broken(pair: tuple[Path, Path]) -> None:
    _, clone = pair
    assert await state(clone) is None
    (clone / "untracked.txt").write_text("new")  # untracked files are not "dirty"
    assert await state(clone) is None


async def test_not_a_folder_and_not_a_repo(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    assert await state(tmp_path / "missing") == "not a folder"
    plain = tmp_path / "plain"
    plain.mkdir()
    assert await state(plain) == "not a git work tree"
    sub = pair[1] / "sub"
    sub.mkdir()
    assert (await state(sub) or "").startswith("not the top of a work tree")


async def test_each_local_problem(pair: tuple[Path, Path]) -> None:
    _, clone = pair
    assert await state(clone, remote="upstream") == "no remote upstream"
    assert await state(clone, branch="master") == "branch main is checked out, not master"
    (clone / "a.txt").write_text("changed\n")
    assert await state(clone) == "dirty work tree: 1 tracked files changed"
    git(clone, "checkout", "-q", "--", "a.txt")
    lock = Path(git(clone, "rev-parse", "--absolute-git-dir")) / "index.lock"
    lock.write_text("")
    assert (await state(clone) or "").startswith("index.lock is present")
    lock.unlink()
    head = git(clone, "rev-parse", "HEAD")
    git(clone, "checkout", "-q", "--detach")
    assert await state(clone) == f"detached HEAD at {head}"


async def test_merge_in_progress_is_broken_and_rebase_is_rebasing(pair: tuple[Path, Path],
                                                                  ) -> None:
    _, clone = pair
    base = git(clone, "rev-parse", "HEAD")
    git(clone, "checkout", "-q", "-b", "other")
    commit(clone, "a.txt", "other\n")
    git(clone, "checkout", "-q", "main")
    commit(clone, "a.txt", "mine\n")
    git(clone, "merge", "other", check=False)
    assert await state(clone) == "a merge is in progress (MERGE_HEAD)"
    git(clone, "merge", "--abort")
    git(clone, "rebase", "other", check=False)
    assert await state(clone) == "rebasing"
    git(clone, "rebase", "--abort")
    assert await state(clone) is None and git(clone, "merge-base", "HEAD", "other") == base


async def test_divergence_and_missing_by_patch(pair: tuple[Path, Path], tmp_path: Path) -> None:
    origin, clone = pair
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(origin), str(other))
    commit(other, "b.txt", "theirs\n")
    git(other, "push", "-q", "origin", "main")
    mine = commit(clone, "c.txt", "mine\n")
    git(clone, "fetch", "-q", "origin")
    g = Git(str(clone), 30)
    assert await divergence(g, "origin/main") == (1, 1)
    assert await missing_by_patch(g, "origin/main") == [mine]
    git(other, "fetch", "-q", str(clone), "main")
    git(other, "cherry-pick", mine)  # the same patch under a new id upstream
    git(other, "push", "-q", "origin", "main")
    git(clone, "fetch", "-q", "origin")
    assert await divergence(g, "origin/main") == (1, 2)
    assert await missing_by_patch(g, "origin/main") == []


def test_classify_and_short() -> None:
    assert [_classify(a, b) for a, b in ((0, 0), (0, 3), (2, 0), (1, 1))] == [
        "up_to_date", "behind", "ahead", "diverged"]
    assert short("0123456789abcdef") == "0123456789ab" and short(None) == "none"


def test_config_rules() -> None:
    with pytest.raises(ConfigError):
        BackupRepo(path="relative").validate()
    with pytest.raises(ConfigError):
        BackupRepo(path="/x", branch="a..b").validate()
    with pytest.raises(ConfigError):
        BackupRepairConfig(repos=(BackupRepo(path="/x"), BackupRepo(path="/x"))).validate()
    BackupRepairConfig(repos=(BackupRepo(path="/x"), BackupRepo(path="/y"))).validate()


async def test_untracked_in_way_sees_files_ignored_files_and_dir_file_clashes(
        pair: tuple[Path, Path]) -> None:
    _, clone = pair
    commit(clone, "notes.txt", "tracked\n")
    (clone / "d").mkdir()
    commit(clone, "d/x.txt", "x\n")
    commit(clone, "f", "a file\n")
    target = git(clone, "rev-parse", "HEAD")
    git(clone, "reset", "-q", "--hard", "HEAD~3")
    g = Git(str(clone), 30)
    (clone / "unrelated.txt").write_text("mine")
    assert await untracked_in_way(g, target) == []
    (clone / "notes.txt").write_text("PRECIOUS")  # the same path
    (clone / "d").write_text("a file where the target has a folder")
    (clone / "f").mkdir()
    (clone / "f" / "inner.txt").write_text("a folder where the target has a file")
    (clone / ".git" / "info" / "exclude").write_text("notes.txt\n")  # ignored counts too
    assert await untracked_in_way(g, target) == ["d", "f/inner.txt", "notes.txt"]


def test_reason_keeps_the_lines_that_matter_first() -> None:
    noise = "\n".join(f"remote: line {i} " + "x" * 40 for i in range(30))
    text = (f"{noise}\nTo /srv/origin.git\n! [remote rejected] main -> main (pre-receive hook "
            "declined)\nerror: failed to push some refs to '/srv/origin.git'\n")
    got = reason(text)
    assert got.startswith("! [remote rejected] main -> main (pre-receive hook declined) | "
                          "error: failed to push some refs")
    assert len(got) == 600 and got.endswith("...")
    assert reason("fatal: x\n\n") == "fatal: x"
