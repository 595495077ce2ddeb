"""The backup-repair job through the real JobRunner, on real git repos in temp dirs.

A bare "origin", a second clone ("other", standing for the machine that
pushes) and the clone under repair ("local"), driven into each state.  The
remote is always a local path; the unreachable one is a path that does not
exist.  HOME is an empty temp folder, so no user git config takes part.
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.audit import Auditor
from agent.config import BackupRepairConfig, BackupRepo, Config, SamplingConfig
from agent.errors import Locked
from agent.hold import HoldStore
from agent.jobs.backup_repair import SAFETY_PREFIX, BackupRepairJob
from agent.jobs.records import RunRecords
from agent.jobs.runner import JobRunner
from agent.journal import JournalWriter
from agent.notify.events import AlertLog
from agent.store import Store
from tests.unit.test_backup_classify import commit, git


@dataclass
class Kit:
    tmp: Path
    origin: Path
    other: Path
    local: Path
    runner: JobRunner
    alerts: AlertLog
    hold: HoldStore

    def tip(self, repo: Path, ref: str = "main") -> str:
        return git(repo, "rev-parse", ref)

    def safety_refs(self) -> dict[str, str]:
        out = git(self.local, "for-each-ref", "--format=%(refname) %(objectname)", SAFETY_PREFIX)
        return dict(line.split() for line in out.splitlines())

    def upstream_commit(self, name: str, text: str) -> str:
        git(self.other, "pull", "-q", "--ff-only")
        made = commit(self.other, name, text)
        git(self.other, "push", "-q", "origin", "main")
        return made

    async def run(self, **kw: object) -> dict[str, object]:
        return await self.runner.run("backup-repair", **kw)  # type: ignore[arg-type]


def make_kit(tmp: Path, *, push: bool = False, remote_path: Path | None = None,
             timeout_s: float = 30) -> Kit:
    origin, other, local = tmp / "origin.git", tmp / "other", tmp / "local"
    if not origin.exists():
        git(tmp, "init", "-q", "--bare", "-b", "main", str(origin))
        git(tmp, "clone", "-q", str(origin), str(other))
        git(other, "checkout", "-q", "-b", "main")
        commit(other, "a.txt", "one\ntwo\nthree\n")
        git(other, "push", "-q", "origin", "main")
        git(tmp, "clone", "-q", str(origin), str(local))
    cfg = replace(Config(), state_dir=str(tmp / "state"), run_dir=str(tmp / "run"),
                  sampling=SamplingConfig(disks=(str(tmp),)),
                  backup_repair=BackupRepairConfig(repos=(BackupRepo(
                      path=str(local), remote="origin", branch="main", push=push),),
                      git_timeout_s=timeout_s))
    store = Store(cfg.state_dir)
    auditor = Auditor(JournalWriter(socket_path=str(tmp / "no.sock"), stream=io.StringIO()))
    alerts = AlertLog(store, auditor)
    hold = HoldStore(cfg.state_dir)
    job = BackupRepairJob()
    runner = JobRunner(jobs={job.name: job}, records=RunRecords(store), config=cfg,
                       auditor=auditor, hold=hold, alerts=alerts,
                       services=SimpleNamespace(alerts=alerts))
    return Kit(tmp, origin, other, local, runner, alerts, hold)


@pytest.fixture
async def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Kit]:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    k = make_kit(tmp_path)
    yield k
    await k.runner.close()


def step(rec: dict[str, object]) -> dict[str, str]:
    steps = rec["steps"]
    assert isinstance(steps, list) and len(steps) == 1
    return steps[0]  # type: ignore[no-any-return]


def before_after(detail: str) -> tuple[str, str]:
    m = re.search(r"before (\w+) after (\w+)", detail)
    assert m, detail
    return m.group(1), m.group(2)


def snapshot(repo: Path) -> tuple[str, str, str]:
    """Every ref, the index/work tree status and the git dir's file names."""
    git_dir = Path(git(repo, "rev-parse", "--absolute-git-dir"))
    names = sorted(p.name for p in git_dir.iterdir() if p.name not in ("FETCH_HEAD", "logs"))
    return (git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
            git(repo, "status", "--porcelain=v1"), " ".join(names))


async def test_ten_runs_on_a_healthy_repo_are_ok_and_change_nothing(kit: Kit) -> None:
    before = snapshot(kit.local)
    for _ in range(10):
        rec = await kit.run()
        assert rec["status"] == "ok", rec
        s = step(rec)
        assert s["detail"].startswith("up_to_date;") and s["error"] is None
        b, a = before_after(s["detail"])
        assert b == a == kit.tip(kit.local)
        assert snapshot(kit.local) == before
    assert kit.alerts.recent() == []


async def test_behind_is_fast_forwarded(kit: Kit) -> None:
    old = kit.tip(kit.local)
    new = kit.upstream_commit("b.txt", "theirs\n")
    rec = await kit.run()
    s = step(rec)
    assert rec["status"] == "ok" and s["detail"].startswith("behind;")
    assert before_after(s["detail"]) == (old, new) and kit.tip(kit.local) == new
    assert "merge --ff-only" in s["detail"] and kit.safety_refs() == {}


async def test_ahead_is_reported_when_push_is_off(kit: Kit) -> None:
    mine = commit(kit.local, "c.txt", "mine\n")
    rec = await kit.run()
    s = step(rec)
    assert rec["status"] == "ok" and s["detail"].startswith("ahead;")
    assert "push is off" in s["detail"]
    assert kit.tip(kit.origin) != mine and kit.tip(kit.local) == mine


async def test_ahead_is_pushed_when_push_is_on(kit: Kit) -> None:
    await kit.runner.close()
    kit = make_kit(kit.tmp, push=True)
    mine = commit(kit.local, "c.txt", "mine\n")
    rec = await kit.run()
    assert rec["status"] == "ok" and "pushed 1 commits" in step(rec)["detail"]
    assert kit.tip(kit.origin) == mine == kit.tip(kit.local)


async def test_diverged_without_conflict_is_rebased_with_a_safety_ref(kit: Kit) -> None:
    theirs = kit.upstream_commit("b.txt", "theirs\n")
    mine = commit(kit.local, "c.txt", "mine\n")
    rec = await kit.run()
    s = step(rec)
    assert rec["status"] == "ok" and s["detail"].startswith("diverged;"), rec
    assert list(kit.safety_refs().values()) == [mine]
    assert git(kit.local, "rev-parse", "HEAD~1") == theirs
    assert (kit.local / "c.txt").read_text() == "mine\n"
    assert before_after(s["detail"]) == (mine, kit.tip(kit.local))
    assert "push is off" in s["detail"]  # rebased, now ahead by one: reported


async def test_conflict_is_aborted_alerted_and_the_repo_left_as_it_was(kit: Kit) -> None:
    kit.upstream_commit("a.txt", "one\nTHEIRS\nthree\n")
    mine = commit(kit.local, "a.txt", "one\nMINE\nthree\n")
    before = snapshot(kit.local)
    rec = await kit.run()
    s = step(rec)
    assert rec["status"] == "failed"
    assert s["error"].startswith("diverged: rebase conflict, aborted (repo left as it was)")
    assert f"no reset: 1 local commits are not on the remote ({mine[:12]})" in s["error"]
    assert kit.tip(kit.local) == mine and (kit.local / "a.txt").read_text() == "one\nMINE\nthree\n"
    _refs, status, names = snapshot(kit.local)
    assert status == before[1] == "" and "rebase-merge" not in names
    assert names.replace(" ORIG_HEAD", "") == before[2]  # ORIG_HEAD: git's own pointer
    assert list(kit.safety_refs().values()) == [mine]
    kinds = [(e.kind, e.subject, e.level) for e in kit.alerts.recent()]
    assert ("backup.conflict", str(kit.local), "CRIT") in kinds


async def test_force_push_with_our_commits_upstream_resets(kit: Kit) -> None:
    git(kit.local, "pull", "-q", "--ff-only")
    mine = [commit(kit.local, "c.txt", "mine 1\n"), commit(kit.local, "d.txt", "mine 2\n")]
    git(kit.local, "push", "-q", "origin", "main")
    git(kit.other, "pull", "-q", "--ff-only")
    # Upstream rewrites history: a new commit under ours, ours replayed (new ids), force-push.
    git(kit.other, "reset", "-q", "--hard", "HEAD~2")
    commit(kit.other, "a.txt", "one\nrewritten\nthree\n")
    git(kit.other, "cherry-pick", mine[0], mine[1])
    git(kit.other, "push", "-q", "--force", "origin", "main")
    new = kit.tip(kit.other)
    assert new not in mine
    rec = await kit.run()
    s = step(rec)
    assert rec["status"] == "ok" and "reset --hard" in s["detail"], rec
    assert kit.tip(kit.local) == new and list(kit.safety_refs().values()) == [mine[1]]
    assert git(kit.local, "status", "--porcelain") == ""


async def test_a_local_commit_that_would_be_lost_is_never_reset(kit: Kit) -> None:
    kit.upstream_commit("a.txt", "one\nforced\nthree\n")
    mine = commit(kit.local, "a.txt", "one\nonly here\nthree\n")
    rec = await kit.run()
    assert rec["status"] == "failed" and "no reset" in step(rec)["error"]
    assert kit.tip(kit.local) == mine
    assert git(kit.local, "cat-file", "-p", "HEAD:a.txt") == "one\nonly here\nthree"


@pytest.mark.parametrize("breakage,expect", [
    ("index.lock", "index.lock is present"),
    ("dirty", "dirty work tree"),
    ("detached", "detached HEAD"),
    ("not-a-repo", "not a git work tree"),
])
async def test_broken_repos_are_reported_and_left_alone(kit: Kit, breakage: str,
                                                        expect: str) -> None:
    kit.upstream_commit("b.txt", "theirs\n")  # there would be work to do
    old = kit.tip(kit.local)
    if breakage == "index.lock":
        (kit.local / ".git" / "index.lock").write_text("")
    elif breakage == "dirty":
        (kit.local / "a.txt").write_text("edited\n")
    elif breakage == "detached":
        git(kit.local, "checkout", "-q", "--detach")
    else:
        (kit.local / ".git").rename(kit.tmp / "moved.git")
    rec = await kit.run()
    s = step(rec)
    assert rec["status"] == "failed" and s["error"].startswith("broken: " + expect), s
    if breakage == "not-a-repo":
        assert before_after(s["detail"]) == ("none", "none")
    else:
        assert before_after(s["detail"]) == (old, old)
        assert kit.tip(kit.local) == old
        assert git(kit.local, "rev-parse", "origin/main") == old  # not even fetched
    if breakage == "dirty":
        assert (kit.local / "a.txt").read_text() == "edited\n"
    assert [(e.kind, e.subject) for e in kit.alerts.recent()] == [
        ("backup.failed", str(kit.local)), ("job.failed", "backup-repair")][::-1]


async def test_a_leftover_rebase_is_aborted_first(kit: Kit) -> None:
    commit(kit.local, "c.txt", "mine\n")
    git(kit.local, "push", "-q", "origin", "main")
    tip = kit.tip(kit.local)
    git(kit.local, "rebase", "-q", "--exec", "false", "HEAD~1", check=False)  # stops half done
    assert (kit.local / ".git" / "rebase-merge").is_dir()
    new = kit.upstream_commit("b.txt", "theirs\n")
    rec = await kit.run()
    s = step(rec)
    assert rec["status"] == "ok", rec
    assert "rebase --abort (leftover)" in s["detail"] and "merge --ff-only" in s["detail"]
    assert before_after(s["detail"]) == (tip, new)
    assert not (kit.local / ".git" / "rebase-merge").exists()


async def test_an_unreachable_remote_changes_nothing(kit: Kit) -> None:
    kit.upstream_commit("b.txt", "theirs\n")
    git(kit.local, "remote", "set-url", "origin", str(kit.tmp / "does-not-exist.git"))
    before = snapshot(kit.local)
    rec = await kit.run()
    s = step(rec)
    assert rec["status"] == "failed" and s["error"].startswith("upstream_unavailable: fetch")
    assert snapshot(kit.local) == before
    assert kit.alerts.recent()[1].kind == "backup.failed"
    git(kit.local, "remote", "set-url", "origin", str(kit.origin))
    rec = await kit.run()
    assert rec["status"] == "ok" and step(rec)["detail"].startswith("behind;")
    assert (kit.alerts.recent()[0].kind, kit.alerts.recent()[0].level) == ("backup.failed", "OK")


async def test_hold_refuses_a_real_run_and_a_dry_run_changes_nothing(kit: Kit) -> None:
    kit.upstream_commit("b.txt", "theirs\n")
    commit(kit.local, "c.txt", "mine\n")
    before = snapshot(kit.local)
    kit.hold.set("test", by="pytest")
    with pytest.raises(Locked):
        await kit.run()
    assert snapshot(kit.local) == before
    rec = await kit.run(dry_run=True)  # the remote's new commit is not here: no fetch in a dry-run
    assert step(rec)["status"] == "planned" and "not fetched yet" in step(rec)["detail"]
    assert snapshot(kit.local) == before
    git(kit.local, "fetch", "-q", "origin")  # now the dry-run can classify
    before = snapshot(kit.local)
    rec = await kit.run(dry_run=True)
    s = step(rec)
    assert rec["status"] == "ok" and s["status"] == "planned"
    assert "would rebase 1 local commits" in s["detail"]
    assert snapshot(kit.local) == before and kit.safety_refs() == {}


def amend_and_force_push(kit: Kit) -> str:
    """The trial's repro: local commits+pushes local1; the other clone amends it, adds and
    commits notes.txt, force-pushes.  Returns local1."""
    git(kit.local, "pull", "-q", "--ff-only")
    local1 = commit(kit.local, "c.txt", "local1\n")
    git(kit.local, "push", "-q", "origin", "main")
    git(kit.other, "pull", "-q", "--ff-only")
    git(kit.other, "commit", "-q", "--amend", "-m", "local1, amended")
    commit(kit.other, "notes.txt", "remote notes\n")
    git(kit.other, "push", "-q", "--force", "origin", "main")
    return local1


@pytest.mark.parametrize("case", ["reset", "ignored-ff", "dir-ff", "rebase"])
async def test_untracked_files_the_target_would_overwrite_are_refused(kit: Kit,
                                                                      case: str) -> None:
    blocked = "notes.txt"
    if case == "reset":
        amend_and_force_push(kit)
    elif case == "ignored-ff":
        kit.upstream_commit("notes.txt", "remote notes\n")
        (kit.local / ".git" / "info" / "exclude").write_text("notes.txt\n")
    elif case == "dir-ff":
        (kit.other / "notes.txt").mkdir()
        kit.upstream_commit("notes.txt/n.txt", "remote notes\n")
    else:
        kit.upstream_commit("notes.txt", "remote notes\n")
        commit(kit.local, "c.txt", "only here\n")  # not on the remote: a rebase
    (kit.local / "notes.txt").write_text("PRECIOUS\n")
    before, tip = snapshot(kit.local), kit.tip(kit.local)
    rec = await kit.run()
    s = step(rec)
    assert rec["status"] == "failed", rec
    assert s["error"].startswith("broken: untracked working tree files would be overwritten "
                                 f"by origin/main: {blocked}; move them away"), s
    assert "conflict" not in s["error"] and "internal" not in s["error"]
    assert (kit.local / "notes.txt").read_text() == "PRECIOUS\n"
    assert kit.tip(kit.local) == tip and snapshot(kit.local)[1:] == before[1:]  # only fetched
    assert kit.safety_refs() == {}
    assert ("backup.failed", str(kit.local)) in [(e.kind, e.subject) for e in kit.alerts.recent()]


async def test_a_hung_remote_times_out_as_upstream_unavailable(kit: Kit) -> None:
    await kit.runner.close()
    kit = make_kit(kit.tmp, timeout_s=2)
    kit.upstream_commit("b.txt", "theirs\n")
    git(kit.local, "config", "remote.origin.uploadpack", "sleep 30; git-upload-pack")
    before = snapshot(kit.local)
    rec = await kit.run()
    s = step(rec)
    assert rec["status"] == "failed"
    assert s["error"] == "upstream_unavailable: fetch from origin timed out after 2 s", s
    assert snapshot(kit.local) == before
    rec = await kit.run(dry_run=True)  # ls-remote hangs the same way
    assert step(rec)["error"] == "upstream_unavailable: fetch from origin timed out after 2 s"


async def test_a_dry_run_reports_without_alerting(kit: Kit) -> None:
    (kit.local / "a.txt").write_text("edited\n")
    rec = await kit.run(dry_run=True)
    assert step(rec)["error"].startswith("broken: dirty work tree"), rec
    amend_and_force_push(kit)
    rec = await kit.run(dry_run=True)
    assert kit.alerts.recent() == []


async def test_one_safety_ref_per_commit(kit: Kit) -> None:
    kit.upstream_commit("a.txt", "one\nTHEIRS\nthree\n")
    mine = commit(kit.local, "a.txt", "one\nMINE\nthree\n")
    for _ in range(3):
        rec = await kit.run()
        assert rec["status"] == "failed"
    [(ref, at)] = kit.safety_refs().items()
    assert at == mine and f"safety ref {ref} already covers {mine[:12]}" in step(rec)["detail"]


async def test_a_rejected_push_keeps_gits_reason(kit: Kit) -> None:
    await kit.runner.close()
    kit = make_kit(kit.tmp, push=True)
    hook = kit.origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\n" + "echo 'policy text that goes on and on'\n" * 20 + "exit 1\n")
    hook.chmod(0o755)
    mine = commit(kit.local, "c.txt", "mine\n")
    rec = await kit.run()
    error = step(rec)["error"]
    assert rec["status"] == "failed" and error.startswith(
        "ahead: push failed: ! [remote rejected] main -> main (pre-receive hook declined) | "
        "error: failed to push some refs"), error
    assert "remote: policy text" in error and len(error) < 700
    assert kit.tip(kit.origin) != mine
