"""The git actions of one ``backup-repair`` step: :class:`Repair`.

A :class:`Repair` holds one repo's state, its branch commit before the repair
and the actions taken; it fetches (a dry-run asks ``git ls-remote``), runs each
changing git command after a fresh hold check (audited), writes safety refs
(``refs/vm-agent/backup/<UTC time>``), pushes without force, and turns the
outcome into the step's :class:`agent.jobs.base.StepResult` and alert events
(``backup.failed``/``backup.conflict``, ``OK`` on recovery).  Which action a
state calls for is decided in :mod:`agent.jobs.backup_repair`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agent import gitrepo
from agent.config import BackupRepo
from agent.errors import AgentError
from agent.gitrepo import Git, short
from agent.jobs.base import JobContext, StepResult, StepStatus
from agent.notify.events import AlertEvent, AlertLevel
from agent.runner import CommandError

SAFETY_PREFIX = "refs/vm-agent/backup/"
ALERT_KINDS = ("backup.failed", "backup.conflict")


@dataclass
class Repair:
    """The repair of one repo; collects the state and the actions for the step's detail."""

    ctx: JobContext
    git: Git
    repo: BackupRepo
    step: str
    dry_run: bool
    state: str = "unknown"
    before: str | None = None
    actions: list[str] = field(default_factory=list)

    @property
    def upstream(self) -> str:
        return f"refs/remotes/{self.repo.remote}/{self.repo.branch}"

    async def blockers(self, upstream: str) -> StepResult | None:
        """Refuse (broken) when untracked or ignored files would be overwritten."""
        paths = await gitrepo.untracked_in_way(self.git, upstream)
        if not paths:
            return None
        shown = ", ".join(paths[:5]) + (f" (+{len(paths) - 5} more)" if len(paths) > 5 else "")
        return await self.fail("broken", f"untracked working tree files would be overwritten "
                               f"by {self.repo.remote}/{self.repo.branch}: {shown}; "
                               "move them away, nothing was changed")

    async def tip(self) -> str | None:
        """The configured branch's commit (None: no such branch, or not a repo)."""
        if self.state == "broken" and self.before is None:
            return None
        return await self.git.commit(f"refs/heads/{self.repo.branch}")

    async def remote_commit(self) -> str | StepResult:
        """Fetch (a dry-run: ls-remote) and return the remote branch's commit, or the
        step's result when there is none (``upstream_unavailable``, no such branch)."""
        if self.dry_run:
            return await self._ls_remote()
        try:
            done = await self.git.try_run("fetch", "--no-tags", "--quiet", self.repo.remote,
                                          f"+refs/heads/{self.repo.branch}:{self.upstream}")
        except CommandError as exc:
            return await self._timed_out(exc)
        if done.returncode != 0:
            return await self._unreachable(done.stderr)
        self.actions.append("fetch")
        return self.upstream

    async def _ls_remote(self) -> str | StepResult:
        try:
            done = await self.git.try_run("ls-remote", "--heads", self.repo.remote,
                                          f"refs/heads/{self.repo.branch}")
        except CommandError as exc:
            return await self._timed_out(exc)
        if done.returncode != 0 or not done.stdout.strip():
            return await self._unreachable(done.stderr if done.returncode else
                                           "couldn't find remote ref")
        commit = done.stdout.split()[0]
        if await self.git.commit(commit) is None:  # not fetched yet: behind at least
            self.state = "behind"
            return await self.done(f"the remote has commits not fetched yet "
                                   f"({short(commit)}); a real run fetches and repairs")
        return commit

    async def _timed_out(self, exc: CommandError, what: str = "fetch from") -> StepResult:
        """A fetch/ls-remote/push killed at the timeout (a hung remote):
        ``upstream_unavailable``."""
        if "timeout_s" not in exc.details:
            raise exc
        return await self.fail("upstream_unavailable", f"{what} {self.repo.remote} timed "
                               f"out after {exc.details['timeout_s']:g} s")

    async def _unreachable(self, stderr: str) -> StepResult:
        tail = gitrepo.reason(stderr)
        if "couldn't find remote ref" in stderr:
            return await self.fail("broken", f"no branch {self.repo.branch} on remote "
                                   f"{self.repo.remote}")
        return await self.fail("upstream_unavailable", f"fetch from {self.repo.remote} "
                               f"failed: {tail}")

    async def change(self, label: str, *args: str, env: dict[str, str] | None = None) -> None:
        """One changing git command, after a fresh hold check (raises Locked)."""
        self.ctx.check_hold(f"backup-repair {label} in {self.repo.path}")
        await self.git.run(*args, env=env)
        self.actions.append(label)
        self.ctx.action("backup.git", message=f"backup-repair {self.repo.path}: {label}",
                        repo=self.repo.path, git=label, before=self.before or "")

    async def keep_detached_head(self) -> None:
        """Before a leftover rebase is aborted: a safety ref at its detached HEAD when that
        commit is not on the branch (commits made while the rebase was stopped)."""
        head = await self.git.commit("HEAD")
        if head is None or self.before is None:
            return
        on_branch = await self.git.try_run("merge-base", "--is-ancestor", head, self.before)
        if on_branch.returncode != 0:
            await self.safety_ref(head)

    async def safety_ref(self, commit: str | None = None) -> str:
        """Create ``refs/vm-agent/backup/<UTC time>`` at ``commit`` (default: the branch tip;
        create-only), unless one already points at that commit (then that one is named and
        returned)."""
        tip = commit or self.before or await self.git.out("rev-parse", "HEAD")
        found = await self.git.out("for-each-ref", "--points-at", tip, "--count=1",
                                   "--format=%(refname)", SAFETY_PREFIX)
        if found:
            self.actions.append(f"safety ref {found} already covers {short(tip)}")
            return found
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        for n in range(100):
            ref = SAFETY_PREFIX + stamp + (f"-{n}" if n else "")
            if await self.git.commit(ref) is None:
                await self.git.run("update-ref", ref, tip, "")
                self.actions.append(f"safety ref {ref}")
                return ref
        raise AgentError(f"no free safety ref name for {stamp}")

    async def push(self, ahead: int) -> StepResult:
        if not self.repo.push:
            return await self.done(f"{ahead} local commits not on the remote; push is off "
                                   "for this repo: reported, not pushed")
        if self.dry_run:
            return await self.done(f"would push {ahead} commits")
        ref = f"refs/heads/{self.repo.branch}"
        try:
            done = await self.git.try_run("push", self.repo.remote, f"{ref}:{ref}")
        except CommandError as exc:
            return await self._timed_out(exc, "push to")
        if done.returncode != 0:
            why = gitrepo.reason(f"{done.stderr}\n{done.stdout}")
            return await self.fail(self.state, f"push failed: {why}")
        self.actions.append(f"push {ahead} commits")
        return await self.done(f"pushed {ahead} commits")

    async def fail(self, state: str, why: str, *, kind: str = "backup.failed",
                   level: AlertLevel = "WARN") -> StepResult:
        self.state = state
        if not self.dry_run:  # a dry-run only reports
            await _emit(self.ctx, AlertEvent(kind, self.repo.path, level,
                                         f"backup repo {self.repo.path}: {state}: {why}"))
        return await self.done("", status="failed", error=f"{state}: {why}")

    async def done(self, note: str, *, status: StepStatus = "ok",
                   error: str | None = None) -> StepResult:
        after = await self.tip()
        detail = (f"{self.state}; before {self.before or 'none'} after {after or 'none'}; "
                  f"actions: {', '.join(self.actions) or 'none'}" + (f"; {note}" if note else ""))
        if status == "ok" and self.dry_run:
            status = "planned"
        elif status == "ok":
            await _recovered(self.ctx, self.repo.path)
        self.ctx.action("backup.repo", message=f"backup-repair {self.repo.path}: {detail}",
                        repo=self.repo.path, state=self.state, before=self.before or "",
                        after=after or "", error=error or "")
        return StepResult(self.step, status, detail=detail, error=error)


async def _emit(ctx: JobContext, event: AlertEvent) -> None:
    alerts = getattr(ctx.services, "alerts", None)
    if alerts is not None:
        await asyncio.to_thread(alerts.emit, event)


async def _recovered(ctx: JobContext, subject: str) -> None:
    """Emit ``OK`` for each backup alert kind whose last event for ``subject`` was not OK."""
    alerts = getattr(ctx.services, "alerts", None)
    if alerts is None:
        return
    for kind in ALERT_KINDS:
        rows = await asyncio.to_thread(
            alerts.store.query, "SELECT level FROM alert_events WHERE kind = ? AND subject = ? "
            "ORDER BY id DESC LIMIT 1", (kind, subject))
        if rows and rows[0]["level"] != "OK":
            await _emit(ctx, AlertEvent(kind, subject, "OK", f"backup repo {subject}: ok again"))
