"""Read-only git inspection for the backup-repair job, through :mod:`agent.runner`.

Every command is ``git -C <path> ...`` as an argv list (no shell) with a
timeout and ``GIT_TERMINAL_PROMPT=0`` (a remote that wants a password fails
instead of waiting for a terminal).  :func:`inspect` finds what makes a repo
*broken* (the states git itself refuses to fast-forward or rebase from);
:func:`divergence` and :func:`missing_by_patch` classify a healthy one
against its remote branch.  Nothing in this module changes a repo.

Sources: ``git-rev-parse(1)``, ``git-status(1)`` (porcelain v1),
``git-rev-list(1)`` (``--left-right --count``), ``git-cherry(1)`` (patch-id
comparison: ``+`` = no equivalent commit upstream), and the files git keeps
in the git dir while an operation is in progress (``MERGE_HEAD``,
``rebase-merge/``, ``rebase-apply/``, ``index.lock``; see ``git-status``'s
wt-status.c).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.runner import Completed, run

#: Added to the child environment of every git command.
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0"}
_ANY_STATUS = tuple(range(-64, 256))
#: Files in the git dir that mean an operation other than a rebase is half done.
_IN_PROGRESS = {"MERGE_HEAD": "a merge", "CHERRY_PICK_HEAD": "a cherry-pick",
                "REVERT_HEAD": "a revert", "BISECT_LOG": "a bisect"}


class Git:
    """``git -C path`` with a timeout (seconds) for each command."""

    def __init__(self, path: str, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s

    async def run(self, *args: str, ok_codes: Sequence[int] = (0,),
                  env: Mapping[str, str] | None = None) -> Completed:
        """Run one git command; raises :class:`agent.runner.CommandError` on another status."""
        return await run(["git", "-C", self.path, *args], timeout_s=self.timeout_s,
                         ok_codes=ok_codes, env={**GIT_ENV, **(env or {})})

    async def try_run(self, *args: str, env: Mapping[str, str] | None = None) -> Completed:
        """Like :meth:`run` but any exit status is returned, not raised."""
        return await self.run(*args, ok_codes=_ANY_STATUS, env=env)

    async def out(self, *args: str) -> str:
        """Stdout of a command that must succeed, stripped."""
        return (await self.run(*args)).stdout.strip()

    async def commit(self, ref: str) -> str | None:
        """The commit id ``ref`` names, or None when it names none."""
        done = await self.try_run("rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
        return done.stdout.strip() if done.returncode == 0 else None


@dataclass(frozen=True)
class Inspection:
    """A repo's local state: ``broken`` says why nothing may be done (None: healthy);
    ``rebasing`` a rebase is half done (``rebase-merge/`` or ``rebase-apply/``);
    ``repo`` the path is the top of a work tree git accepts."""

    broken: str | None
    rebasing: bool = False
    repo: bool = True


async def inspect(git: Git, *, remote: str, branch: str) -> Inspection:
    """Classify the local state of ``git.path`` (read-only; no network).

    Broken, in this order: not a folder, not the top of a work tree (or one
    owned by another user, which git refuses: ``safe.directory``), an
    operation other than a rebase in progress, a leftover ``index.lock`` or
    ref lock (``HEAD.lock``, ``refs/heads/<branch>.lock``,
    ``refs/remotes/<remote>/<branch>.lock``), detached HEAD or another branch
    checked out, no such remote, no commit on ``branch``, a dirty work tree
    (tracked files changed; untracked files are ignored).  A rebase in
    progress is reported as ``rebasing`` (the job aborts it), not as broken,
    unless tracked files are changed: then ``broken`` says so (and
    ``rebasing`` is still true).
    """
    if not await asyncio.to_thread(os.path.isdir, git.path):
        return Inspection("not a folder", repo=False)
    top = await git.try_run("rev-parse", "--show-toplevel")
    if "dubious ownership" in top.stderr:
        return Inspection("git refuses a repo owned by another user (dubious ownership; "
                          "see git config safe.directory)", repo=False)
    if top.returncode != 0 or not _same_dir(top.stdout.strip(), git.path):
        return Inspection("not a git work tree" if top.returncode else
                          f"not the top of a work tree (that is {top.stdout.strip()})",
                          repo=False)
    git_dir = Path(await git.out("rev-parse", "--absolute-git-dir"))
    if await asyncio.to_thread(_rebasing, git_dir):
        return Inspection(await _stopped_rebase_problem(git), rebasing=True)
    common = Path(git.path) / await git.out("rev-parse", "--git-common-dir")  # may be relative
    problem = await asyncio.to_thread(_git_dir_problem, git_dir, common, remote, branch)
    return Inspection(problem or await _head_problem(git, branch)
                      or await _remote_problem(git, remote) or await _dirty(git))


async def _stopped_rebase_problem(git: Git) -> str | None:
    """Why a rebase in progress must not be aborted: ``rebase --abort`` resets the work
    tree, so tracked changes (a conflict being resolved by hand) would be lost."""
    changed = await _changed(git)
    return (f"a rebase is stopped with uncommitted changes ({changed} tracked files "
            "changed): not aborted, that would discard them; finish it (git rebase "
            "--continue) or abort it by hand") if changed else None


def _git_dir_problem(git_dir: Path, common: Path, remote: str, branch: str) -> str | None:
    """An operation half done, or a leftover lock: ``index.lock``, or the ``.lock`` of a ref
    the job updates (``HEAD``, the branch, its remote-tracking ref), which git would fail
    on only after changing the index and work tree (blocking: file checks)."""
    for name, what in _IN_PROGRESS.items():
        if (git_dir / name).exists():
            return f"{what} is in progress ({name})"
    if (git_dir / "rebase-apply").is_dir():
        return "git am is in progress (rebase-apply/applying)"
    locks = [(git_dir, "index.lock"), (git_dir, "HEAD.lock"),
             (common, f"refs/heads/{branch}.lock"),
             (common, f"refs/remotes/{remote}/{branch}.lock")]
    for folder, name in locks:
        try:
            age = time.time() - (folder / name).lstat().st_mtime
        except OSError:
            continue
        return f"{name} is present ({age:.0f} s old): another git runs, or one crashed"
    return None


async def _head_problem(git: Git, branch: str) -> str | None:
    head = await git.try_run("symbolic-ref", "-q", "HEAD")
    if head.returncode != 0:
        return f"detached HEAD at {await git.commit('HEAD') or 'no commit'}"
    if head.stdout.strip() != f"refs/heads/{branch}":
        return f"branch {head.stdout.strip().removeprefix('refs/heads/')} is checked out, " \
               f"not {branch}"
    if await git.commit(f"refs/heads/{branch}") is None:
        return f"branch {branch} has no commit yet"
    return None


async def _remote_problem(git: Git, remote: str) -> str | None:
    found = await git.try_run("remote", "get-url", remote)
    return None if found.returncode == 0 else f"no remote {remote}"


async def _dirty(git: Git) -> str | None:
    changed = await _changed(git)
    return f"dirty work tree: {changed} tracked files changed" if changed else None


async def _changed(git: Git) -> int:
    """How many tracked files are changed, staged or unmerged (``git status``)."""
    status = await git.out("status", "--porcelain=v1", "--untracked-files=no")
    return len([line for line in status.splitlines() if line.strip()])


def _rebasing(git_dir: Path) -> bool:
    """``rebase-merge/``, or ``rebase-apply/`` unless its ``applying`` marker says ``git am``."""
    folder = git_dir / "rebase-apply"
    return (git_dir / "rebase-merge").is_dir() or (
        folder.is_dir() and not (folder / "applying").exists())


def _same_dir(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


async def divergence(git: Git, upstream: str) -> tuple[int, int]:
    """``(ahead, behind)``: commits on HEAD not in ``upstream``, and the reverse
    (``git rev-list --left-right --count HEAD...upstream``)."""
    left, right = (await git.out("rev-list", "--left-right", "--count",
                                 f"HEAD...{upstream}")).split()
    return int(left), int(right)


async def missing_by_patch(git: Git, upstream: str) -> list[str]:
    """Local commits with no patch-equivalent commit in ``upstream`` (``git cherry``'s
    ``+`` lines; a commit the remote has under another id after a force-push is
    not missing).  Commit ids, oldest first."""
    text = await git.out("cherry", upstream, "HEAD")
    return [line[2:].strip() for line in text.splitlines() if line.startswith("+ ")]


def short(commit: str | None) -> str:
    """A commit id for a human line (12 hex digits), or ``none``."""
    return commit[:12] if commit else "none"


async def untracked_in_way(git: Git, target: str) -> list[str]:
    """Untracked or ignored files (``git ls-files --others``, no exclude rules) that
    checking out ``target`` would overwrite: the same path in ``target``'s tree
    (``git ls-tree -r``), a directory of it where there is a file here, or a file of
    it where there is a directory here (a nested repo counts as one path).  Relative
    paths, sorted."""
    local = [p.rstrip("/") for p in (await git.out("ls-files", "--others", "-z")).split("\0")]
    files = set((await git.out("ls-tree", "-r", "--name-only", "-z", target)).split("\0"))
    dirs = {p.rsplit("/", 1)[0] for p in files if "/" in p}
    dirs |= {d.rsplit("/", i)[0] for d in dirs for i in range(1, d.count("/") + 1)}
    return sorted(p for p in local if p and (p in files or p in dirs or _under_file(p, files)))


def _under_file(path: str, files: set[str]) -> bool:
    """``path`` lies in a folder that ``files`` holds as a file."""
    parts = path.split("/")
    return any("/".join(parts[:i]) in files for i in range(1, len(parts)))


#: Lines of git's output that give the reason for a failure (``git-push(1)`` OUTPUT).
_REASON_PREFIXES = ("!", "error:", "fatal:", "hint:")


def reason(text: str, limit: int = 600) -> str:
    """git's output for a human line: the lines starting ``!`` (``! [rejected]``,
    ``! [remote rejected]``), then ``error:``, ``fatal:``, ``hint:``, then the rest;
    joined with `` | ``, cut at ``limit`` characters."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    key = [line for p in _REASON_PREFIXES for line in lines if line.startswith(p)]
    joined = " | ".join(key + [line for line in lines if line not in key])
    return joined if len(joined) <= limit else joined[:limit - 3] + "..."
