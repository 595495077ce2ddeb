"""``backup-repair``: keep each configured git work tree in line with its remote branch.

One step per repo of ``backup_repair.repos`` (``path``, ``remote``,
``branch``, ``push``).  :meth:`BackupRepairJob.plan` only reads
(:func:`agent.gitrepo.inspect`); :meth:`BackupRepairJob.execute` acts:

1. a rebase left half done (an earlier crash) is aborted first;
2. broken (not a repo, no such remote, detached HEAD, another branch, a
   merge in progress, a leftover ``index.lock``, a dirty work tree): nothing
   is done, the step fails, alert ``backup.failed``;
3. fetch ``+refs/heads/B:refs/remotes/R/B``; a fetch that fails changes
   nothing: ``upstream_unavailable``, also when it times out
   (``git_timeout_s``: a hung remote); no such branch on the remote: broken;
4. when the state (5.) calls for a fast-forward, reset or rebase: untracked or
   ignored files the remote tree would overwrite
   (:func:`agent.gitrepo.untracked_in_way`) make
   the repo broken, nothing is touched (a safety ref keeps commits, not files);
5. classify with ``git rev-list --left-right --count`` and act:
   ``up_to_date`` nothing; ``behind`` ``git merge --ff-only``; ``ahead``
   ``git push`` (no force) when the repo's ``push`` is true, else reported;
   ``diverged``: when every local commit is on the remote by patch
   (``git cherry``: e.g. after a force-push) ``git reset --hard`` to the
   remote branch, else ``git rebase`` onto it (then pushed like ``ahead``);
   a conflicting rebase is aborted (``git rebase --abort``: the repo is left
   as it was) and alerted ``backup.conflict`` (another rebase failure gives
   git's reason); a failed push keeps git's reason lines
   (:func:`agent.gitrepo.reason`).

Before any rebase or reset, a safety ref ``refs/vm-agent/backup/<UTC time>``
keeps the old tip reachable (none is added when one already points at it).
The job is ``destructive``: the runner refuses a real run with 423 during a
maintenance hold, and the hold is checked again before every change.  A
dry-run changes nothing, not even remote-tracking refs: it asks the remote
with ``git ls-remote`` instead of fetching, and it emits no alerts (it only
reports).

Each step's detail: ``<state>; before <commit> after <commit>; actions: ...``
(the configured branch's commit before and after); each action is audited.
A repo that is fine again after a failure gets an ``OK`` event of the same
kind (the notifier announces the recovery).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agent import gitrepo
from agent.config import BackupRepo
from agent.errors import AgentError, Locked
from agent.gitrepo import Git, divergence, inspect, missing_by_patch, short
from agent.jobs.base import JobContext, Step, StepResult, StepStatus
from agent.notify.events import AlertEvent, AlertLevel
from agent.runner import CommandError

SAFETY_PREFIX = "refs/vm-agent/backup/"
STATES = ("up_to_date", "behind", "ahead", "diverged", "broken", "upstream_unavailable")
ALERT_KINDS = ("backup.failed", "backup.conflict")


class BackupRepairJob:
    """See the module docstring.  Registered in :mod:`agent.jobs.catalog`."""

    name = "backup-repair"
    modes = ("standard",)
    default_mode = "standard"
    destructive = True

    async def plan(self, ctx: JobContext, mode: str) -> list[Step]:
        """One ``repo`` step per configured repo, its detail the local state (read-only)."""
        timeout = ctx.config.backup_repair.git_timeout_s
        return [await _plan_one(repo, timeout) for repo in ctx.config.backup_repair.repos]

    async def execute(self, ctx: JobContext, step: Step, *, dry_run: bool) -> StepResult:
        """Repair one repo (or, with ``dry_run``, say what would be done: ``planned``)."""
        repo = BackupRepo(**step.args)
        git = Git(repo.path, ctx.config.backup_repair.git_timeout_s)
        repair = Repair(ctx, git, repo, step.name, dry_run=dry_run)
        try:
            return await repair.run()
        except Locked:
            raise
        except AgentError as exc:
            return await repair.fail("broken", f"{exc.code}: {exc.message}")


async def _plan_one(repo: BackupRepo, timeout_s: float) -> Step:
    args = {"path": repo.path, "remote": repo.remote, "branch": repo.branch, "push": repo.push}
    try:
        found = await inspect(Git(repo.path, timeout_s), remote=repo.remote, branch=repo.branch)
        local = ("leftover rebase" if found.rebasing else
                 f"broken: {found.broken}" if found.broken else "clean")
    except AgentError as exc:
        local = f"not inspected: {exc.message}"
    return Step(f"repo:{repo.path}", "repo", f"{repo.path} ({repo.remote}/{repo.branch}, "
                f"push {'on' if repo.push else 'off'}): {local}", None, args)


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

    async def run(self) -> StepResult:
        found = await inspect(self.git, remote=self.repo.remote, branch=self.repo.branch)
        self.before = await self.tip() if found.repo else None
        if found.rebasing:
            if self.dry_run:
                return await self.done("would abort the leftover rebase, then repair")
            await self.change("rebase --abort (leftover)", "rebase", "--abort")
            found = await inspect(self.git, remote=self.repo.remote, branch=self.repo.branch)
        if found.broken:
            return await self.fail("broken", found.broken)
        upstream = await self.remote_commit()
        if isinstance(upstream, StepResult):
            return upstream
        ahead, behind = await divergence(self.git, upstream)
        self.state = _classify(ahead, behind)
        if self.state in ("behind", "diverged") and (blocked := await self.blockers(upstream)):
            return blocked
        return await _HANDLERS[self.state](self, upstream, ahead, behind)

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

    async def _timed_out(self, exc: CommandError) -> StepResult:
        """A fetch/ls-remote killed at the timeout (a hung remote): ``upstream_unavailable``."""
        if "timeout_s" not in exc.details:
            raise exc
        return await self.fail("upstream_unavailable", f"fetch from {self.repo.remote} timed "
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

    async def safety_ref(self) -> str:
        """Create ``refs/vm-agent/backup/<UTC time>`` at the branch tip (create-only),
        unless one already points at that commit (then that one is named and returned)."""
        tip = self.before or await self.git.out("rev-parse", "HEAD")
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
        done = await self.git.try_run("push", self.repo.remote, f"{ref}:{ref}")
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


def _classify(ahead: int, behind: int) -> str:
    if ahead and behind:
        return "diverged"
    return "ahead" if ahead else "behind" if behind else "up_to_date"


async def _up_to_date(r: Repair, upstream: str, ahead: int, behind: int) -> StepResult:
    return await r.done("")


async def _behind(r: Repair, upstream: str, ahead: int, behind: int) -> StepResult:
    if r.dry_run:
        return await r.done(f"would fast-forward {behind} commits")
    await r.change("merge --ff-only", "merge", "--ff-only", "--quiet", upstream)
    return await r.done(f"fast-forwarded {behind} commits")


async def _ahead(r: Repair, upstream: str, ahead: int, behind: int) -> StepResult:
    return await r.push(ahead)


async def _diverged(r: Repair, upstream: str, ahead: int, behind: int) -> StepResult:
    missing = await missing_by_patch(r.git, upstream)
    if not missing:
        if r.dry_run:
            return await r.done(f"would reset --hard to the remote: all {ahead} local commits "
                                "are on it by patch")
        r.ctx.check_hold(f"backup-repair reset --hard in {r.repo.path}")
        await r.safety_ref()
        await r.change("reset --hard", "reset", "--hard", "--quiet", upstream)
        return await r.done(f"reset to the remote: all {ahead} local commits are on it by patch")
    if r.dry_run:
        return await r.done(f"would rebase {len(missing)} local commits onto the remote")
    return await _rebase(r, upstream, missing)


async def _rebase(r: Repair, upstream: str, missing: list[str]) -> StepResult:
    r.ctx.check_hold(f"backup-repair rebase in {r.repo.path}")
    await r.safety_ref()
    env = await _identity(r.git)
    done = await r.git.try_run("rebase", "--no-autostash", upstream, env=env)
    if done.returncode == 0:
        r.actions.append("rebase")
        ahead, _ = await divergence(r.git, upstream)
        return await r.push(ahead)
    conflict = "CONFLICT" in done.stdout + done.stderr
    if (await r.git.try_run("rebase", "--abort")).returncode == 0:
        r.actions.append(f"rebase ({'conflict' if conflict else 'failed'}), rebase --abort")
    left = "left as it was" if await r.tip() == r.before else "NOT as it was"
    why = "rebase conflict" if conflict else f"rebase failed ({gitrepo.reason(done.stderr, 300)})"
    lost = ", ".join(short(c) for c in missing)
    return await r.fail("diverged", f"{why}, aborted (repo {left}); no reset: "
                        f"{len(missing)} local commits are not on the remote ({lost})",
                        kind="backup.conflict" if conflict else "backup.failed", level="CRIT")


async def _identity(git: Git) -> dict[str, str]:
    """A committer for the rebase when git has none configured (``vm-agent``)."""
    if (await git.try_run("config", "user.email")).returncode == 0:
        return {}
    return {"GIT_COMMITTER_NAME": "vm-agent",
            "GIT_COMMITTER_EMAIL": f"vm-agent@{socket.gethostname()}"}


Handler = Callable[[Repair, str, int, int], Awaitable[StepResult]]
_HANDLERS: dict[str, Handler] = {"up_to_date": _up_to_date, "behind": _behind, "ahead": _ahead,
                             "diverged": _diverged}


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
