"""Attacks on the backup-repair job with real git: states that real machines leave behind.

Each test drives a repo (built by :func:`tests.integration.test_backup_repair.make_kit`:
a bare "origin", a pushing clone "other", the clone under repair "local") into a
state a killed git, an operator or a flaky remote leaves, runs the job through
the real JobRunner and checks that nothing is lost and the record says why.
Remotes are local paths or a smart-HTTP server on 127.0.0.1 (``git
http-backend`` behind a tiny http.server, started and stopped by the test).
"""

# The fixture kit is test_backup_repair's, imported: its parameters "redefine" it.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.integration.test_backup_repair import (  # noqa: F401  (kit: a fixture)
    Kit,
    before_after,
    kit,
    make_kit,
    snapshot,
    step,
)
from tests.unit.test_backup_classify import commit, git


def repoint(kit: Kit, path: str | Path, **kw: object) -> None:
    """Configure the kit's one repo at ``path`` (and ``kw``: push, remote, branch)."""
    cfg = kit.runner.config
    repo = replace(cfg.backup_repair.repos[0], path=str(path), **kw)  # type: ignore[arg-type]
    kit.runner.config = replace(cfg, backup_repair=replace(cfg.backup_repair, repos=(repo,)))


def write_named(folder: Path, name: bytes, data: bytes) -> None:
    """Write ``data`` to a file whose name is raw bytes (non-UTF-8 names)."""
    with open(os.path.join(bytes(folder), name), "wb") as f:
        f.write(data)


def read_named(folder: Path, name: bytes) -> bytes:
    with open(os.path.join(bytes(folder), name), "rb") as f:
        return f.read()


def chown_tree(root: Path, uid: int) -> None:
    os.lchown(root, uid, uid)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lchown(os.path.join(folder, name), uid, uid)


def audit_text(kit: Kit) -> str:
    """Everything the auditor wrote (the JSON-line fallback stream: no journal here)."""
    stream = kit.runner.auditor.writer.stream
    return stream.getvalue()  # type: ignore[attr-defined,no-any-return]


def everything_recorded(kit: Kit, rec: dict[str, object]) -> str:
    """The run record, the audit lines and the alert texts, as one string."""
    alerts = [e.text for e in kit.alerts.recent()]
    return json.dumps(rec, default=str) + audit_text(kit) + json.dumps(alerts)


# --- stale locks left by a killed git ------------------------------------------------


@pytest.mark.parametrize("lock", ["HEAD.lock", "refs/heads/main.lock",
                                  "refs/remotes/origin/main.lock"])
async def test_a_stale_ref_lock_is_broken_and_the_work_tree_is_untouched(
        kit: Kit, lock: str) -> None:
    """A killed git can leave a ref's ``.lock``: ``merge --ff-only`` would then update the
    index and work tree and fail on the ref, leaving the repo dirty (HEAD old, files new)."""
    kit.upstream_commit("b.txt", "theirs\n")
    old = kit.tip(kit.local)
    (kit.local / ".git" / lock).parent.mkdir(parents=True, exist_ok=True)
    (kit.local / ".git" / lock).write_text("")
    rec = await kit.run()
    s = step(rec)
    assert rec["status"] == "failed"
    assert s["error"].startswith(f"broken: {lock} is present"), s
    assert kit.tip(kit.local) == old and git(kit.local, "status", "--porcelain") == ""
    assert not (kit.local / "b.txt").exists()
    (kit.local / ".git" / lock).unlink()
    rec = await kit.run()
    assert rec["status"] == "ok" and step(rec)["detail"].startswith("behind;"), rec


# --- a rebase left half done -----------------------------------------------------------


def stop_a_rebase(kit: Kit) -> str:
    """Local has a pushed commit; a rebase of it stops half done (``--exec false``).
    Returns the branch tip."""
    commit(kit.local, "c.txt", "mine\n")
    git(kit.local, "push", "-q", "origin", "main")
    git(kit.local, "rebase", "-q", "--exec", "false", "HEAD~1", check=False)
    assert (kit.local / ".git" / "rebase-merge").is_dir()
    return kit.tip(kit.local)


async def test_a_commit_made_during_a_leftover_rebase_stays_reachable(kit: Kit) -> None:
    """Someone (an operator, a backup script) committed on the detached HEAD of a stopped
    rebase: aborting it must not leave that commit unreachable."""
    tip = stop_a_rebase(kit)
    made = commit(kit.local, "during.txt", "committed while the rebase was stopped\n")
    rec = await kit.run()
    s = step(rec)
    assert "rebase --abort (leftover)" in s["detail"], s
    assert kit.tip(kit.local) == tip
    reachable = git(kit.local, "for-each-ref", "--contains", made, "--format=%(refname)")
    assert reachable.startswith("refs/vm-agent/backup/"), (reachable, s)
    assert f"safety ref {reachable}" in s["detail"]


async def test_a_leftover_rebase_with_uncommitted_changes_is_not_aborted(kit: Kit) -> None:
    """``rebase --abort`` resets the work tree: uncommitted edits (e.g. a conflict being
    resolved by hand) would be lost.  Reported broken, nothing touched."""
    stop_a_rebase(kit)
    (kit.local / "a.txt").write_text("half resolved by hand\n")
    before = snapshot(kit.local)
    rec = await kit.run()
    s = step(rec)
    assert rec["status"] == "failed"
    assert s["error"].startswith("broken: a rebase is stopped with uncommitted changes"), s
    assert (kit.local / "a.txt").read_text() == "half resolved by hand\n"
    assert snapshot(kit.local)[1:] == before[1:]
    assert (kit.local / ".git" / "rebase-merge").is_dir()


# --- a remote that hangs on push -----------------------------------------------------


async def test_a_hung_push_is_upstream_unavailable(kit: Kit) -> None:
    await kit.runner.close()
    kit = make_kit(kit.tmp, push=True, timeout_s=2)
    mine = commit(kit.local, "c.txt", "mine\n")
    git(kit.local, "config", "remote.origin.receivepack", "sleep 30; git-receive-pack")
    rec = await kit.run()
    s = step(rec)
    assert rec["status"] == "failed"
    assert s["error"] == "upstream_unavailable: push to origin timed out after 2 s", s
    assert before_after(s["detail"]) == (mine, mine) and kit.tip(kit.origin) != mine
    assert [(e.kind, e.level) for e in kit.alerts.recent()][1] == ("backup.failed", "WARN")


# --- credentials in the remote URL ---------------------------------------------------


GIT_HTTP_SERVER = r'''
import http.server, os, subprocess, sys

ROOT = sys.argv[1]


class Handler(http.server.BaseHTTPRequestHandler):
    def cgi(self):
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {"GIT_PROJECT_ROOT": ROOT, "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path,
               "QUERY_STRING": query, "REQUEST_METHOD": self.command, "REMOTE_USER": "backup",
               "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(len(body)), "PATH": os.environ["PATH"]}
        out = subprocess.run(["git", "http-backend"], input=body, env=env,
                             capture_output=True, timeout=60).stdout
        head, _, rest = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode().split("\r\n"):
            key, _, value = line.partition(": ")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers.append((key, value))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        self.wfile.write(rest)

    do_GET = do_POST = cgi

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
'''


@pytest.fixture
def http_remote(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A smart-HTTP git server on 127.0.0.1 serving ``tmp_path/srv``: (root, port)."""
    root = tmp_path / "srv"
    root.mkdir()
    server = tmp_path / "git_http.py"
    server.write_text(GIT_HTTP_SERVER)
    proc = subprocess.Popen([sys.executable, str(server), str(root)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield root, port
    finally:
        proc.kill()
        proc.wait()


SECRET = "s3cr3t-pw-9f8e"


async def test_credentials_in_the_remote_url_are_never_recorded(
        kit: Kit, http_remote: tuple[Path, int]) -> None:
    await kit.runner.close()
    kit = make_kit(kit.tmp, push=True)
    root, port = http_remote
    git(root, "clone", "-q", "--bare", str(kit.origin), str(root / "o.git"))
    git(root / "o.git", "config", "http.receivepack", "true")
    hook = root / "o.git" / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'policy: no pushes today'\nexit 1\n")
    hook.chmod(0o755)
    url = f"http://backup:{SECRET}@127.0.0.1:{port}/o.git"
    git(kit.local, "remote", "set-url", "origin", url)
    commit(kit.local, "c.txt", "mine\n")
    rec = await kit.run()  # fetch works, push is rejected by the hook
    assert "remote rejected" in step(rec)["error"], rec
    records = [rec]
    git(kit.local, "remote", "set-url", "origin", url.replace("/o.git", "/gone.git"))
    records.append(await kit.run())  # fetch fails: not found
    records.append(await kit.run(dry_run=True))  # ls-remote fails
    git(kit.local, "remote", "set-url", "origin", f"http://backup:{SECRET}@127.0.0.1:1/o.git")
    records.append(await kit.run())  # connection refused
    assert [step(r)["error"].split(":")[0] for r in records] == [
        "ahead", "upstream_unavailable", "upstream_unavailable", "upstream_unavailable"]
    for r in records:
        assert SECRET not in everything_recorded(kit, r)


# --- odd repo paths --------------------------------------------------------------------


async def test_odd_paths_are_broken_not_internal(kit: Kit) -> None:
    """A bare repo, the ``.git`` folder itself, a missing path, a file: each is named."""
    await kit.runner.close()
    cases = {str(kit.origin): "not a git work tree",
             str(kit.local / ".git"): "not a git work tree",
             str(kit.tmp / "missing"): "not a folder",
             str(kit.local / "a.txt"): "not a folder",
             str(kit.local / "sub"): "not the top of a work tree"}
    (kit.local / "sub").mkdir()
    kit = make_kit(kit.tmp)
    for path, expect in cases.items():
        repoint(kit, path)
        s = step(await kit.run())
        assert s["error"].startswith(f"broken: {expect}"), (path, s)
        assert before_after(s["detail"]) == ("none", "none"), s


async def test_a_symlinked_repo_path_and_odd_file_names_work(kit: Kit) -> None:
    """The configured path is a symlink to the work tree (with a space in its name); the
    remote adds files whose names have spaces, newlines and non-UTF-8 bytes."""
    await kit.runner.close()
    spaced = kit.tmp / "backup repo"
    kit.local.rename(spaced)
    link = kit.tmp / "link to repo"
    link.symlink_to(spaced)
    kit = make_kit(kit.tmp)
    repoint(kit, link)
    os.symlink(spaced, kit.local)  # the kit's helpers look at kit.local
    git(kit.other, "pull", "-q", "--ff-only")
    odd = [b"with space.txt", b"new\nline.txt", b"latin1-\xe9t\xe9.txt"]
    for name in odd:
        write_named(kit.other, name, b"x\n")
    git(kit.other, "add", "-A")
    git(kit.other, "commit", "-q", "-m", "odd names")
    git(kit.other, "push", "-q", "origin", "main")
    rec = await kit.run()
    assert rec["status"] == "ok" and step(rec)["detail"].startswith("behind;"), rec
    assert kit.tip(kit.local) == kit.tip(kit.other)
    # now an untracked file with a non-UTF-8 name is in the way of the next commit
    write_named(kit.local, b"latin1-\xe0.txt", b"PRECIOUS\n")
    write_named(kit.other, b"latin1-\xe0.txt", b"theirs\n")
    git(kit.other, "add", "-A")
    git(kit.other, "commit", "-q", "-m", "more")
    git(kit.other, "push", "-q", "origin", "main")
    rec = await kit.run()
    s = step(rec)
    assert s["error"].startswith("broken: untracked working tree files would be overwritten"), s
    assert read_named(kit.local, b"latin1-\xe0.txt") == b"PRECIOUS\n"


async def test_a_repo_owned_by_another_user_is_refused(kit: Kit) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown")
    kit.upstream_commit("b.txt", "theirs\n")
    old = kit.tip(kit.local)
    chown_tree(kit.local, 12345)
    rec = await kit.run()
    s = step(rec)
    assert s["error"].startswith("broken: git refuses a repo owned by another user"), s
    chown_tree(kit.local, 0)
    assert kit.tip(kit.local) == old


# --- an interrupted run ------------------------------------------------------------------


def runs(kit: Kit) -> list[tuple[str, str | None]]:
    rows = kit.runner.records.store.query(
        "SELECT status, reason FROM job_runs WHERE job = 'backup-repair' ORDER BY id", ())
    return [(r["status"], r["reason"]) for r in rows]


async def interrupt(kit: Kit, after_s: float) -> dict[str, object]:
    """Start a real run, then shut the runner down (no grace) after ``after_s`` seconds, as
    the daemon does on SIGTERM; the run's record."""
    started = await kit.runner.run("backup-repair", wait=False)
    await asyncio.sleep(after_s)
    await kit.runner.close(grace_s=0)
    return await kit.runner.record(int(started["id"]))


async def test_a_run_interrupted_mid_fetch_is_recorded_and_changes_nothing(kit: Kit) -> None:
    kit.upstream_commit("b.txt", "theirs\n")
    git(kit.local, "config", "remote.origin.uploadpack", "sleep 30; git-upload-pack")
    before = snapshot(kit.local)
    rec = await interrupt(kit, 1.5)
    assert (rec["status"], rec["reason"]) == ("failed", "interrupted"), rec
    assert runs(kit) == [("failed", "interrupted")]
    assert snapshot(kit.local) == before
    git(kit.local, "config", "--unset", "remote.origin.uploadpack")
    kit = make_kit(kit.tmp)
    rec = await kit.run()
    assert rec["status"] == "ok" and step(rec)["detail"].startswith("behind;"), rec
    await kit.runner.close()


async def test_a_run_interrupted_mid_rebase_is_finished_by_the_next_run(kit: Kit) -> None:
    """The rebase is killed after it checked out the remote (a post-checkout hook hangs):
    the repo is left mid-rebase on a detached HEAD; the next run aborts that rebase and
    repairs, and the local commit is never unreachable."""
    theirs = kit.upstream_commit("b.txt", "theirs\n")
    mine = commit(kit.local, "c.txt", "mine\n")
    hook = kit.local / ".git" / "hooks" / "post-checkout"
    hook.write_text("#!/bin/sh\nexec sleep 30\n")
    hook.chmod(0o755)
    rec = await interrupt(kit, 2.5)
    assert (rec["status"], rec["reason"]) == ("failed", "interrupted"), rec
    assert (kit.local / ".git" / "rebase-merge").is_dir()  # what a killed rebase leaves
    assert git(kit.local, "for-each-ref", "--contains", mine, "--format=%(refname)")
    hook.unlink()
    kit = make_kit(kit.tmp)
    rec = await kit.run()
    s = step(rec)
    assert rec["status"] == "ok" and "rebase --abort (leftover)" in s["detail"], rec
    assert "rebase" in s["detail"].split("actions: ")[1]
    assert git(kit.local, "rev-parse", "HEAD~1") == theirs
    assert (kit.local / "c.txt").read_text() == "mine\n"
    await kit.runner.close()


async def test_a_rebase_that_times_out_is_aborted_and_the_repo_left_as_it_was(kit: Kit) -> None:
    """git_timeout_s kills a hung rebase (a post-checkout hook that hangs once): the job
    aborts it at once instead of leaving a detached HEAD mid-rebase until the next run."""
    await kit.runner.close()
    kit = make_kit(kit.tmp, timeout_s=2)
    kit.upstream_commit("b.txt", "theirs\n")
    mine = commit(kit.local, "c.txt", "mine\n")
    hook = kit.local / ".git" / "hooks" / "post-checkout"
    marker = kit.tmp / "hung-once"
    hook.write_text(f"#!/bin/sh\n[ -e '{marker}' ] && exit 0\ntouch '{marker}'\nexec sleep 30\n")
    hook.chmod(0o755)
    rec = await kit.run()
    s = step(rec)
    assert rec["status"] == "failed"
    assert s["error"].startswith("diverged: rebase timed out after 2 s, aborted (repo left "
                                 "as it was)"), s
    assert not (kit.local / ".git" / "rebase-merge").exists()
    assert git(kit.local, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert kit.tip(kit.local) == mine and git(kit.local, "status", "--porcelain") == ""
    assert list(kit.safety_refs().values()) == [mine]


async def test_many_repos_in_one_run(kit: Kit) -> None:
    """60 clones of one origin, then the origin moves: one run fast-forwards them all."""
    await kit.runner.close()
    clones = [kit.tmp / f"clone {i:02d}" for i in range(60)]
    for path in clones:
        git(kit.tmp, "clone", "-q", str(kit.origin), str(path))
    kit = make_kit(kit.tmp)
    cfg = kit.runner.config
    repo = cfg.backup_repair.repos[0]
    kit.runner.config = replace(cfg, backup_repair=replace(cfg.backup_repair, repos=tuple(
        replace(repo, path=str(p)) for p in clones)))
    new = kit.upstream_commit("b.txt", "theirs\n")
    rec = await kit.run()
    steps = rec["steps"]
    assert isinstance(steps, list) and len(steps) == 60
    assert rec["status"] == "ok" and all(s["detail"].startswith("behind;") for s in steps)
    assert {git(p, "rev-parse", "HEAD") for p in clones} == {new}
    rec = await kit.run()
    assert all(s["detail"].startswith("up_to_date;") for s in rec["steps"])  # type: ignore[attr-defined]
    await kit.runner.close()


async def test_a_linked_worktree_with_a_stale_branch_lock_in_the_common_dir(kit: Kit) -> None:
    """The configured path is a linked worktree (``.git`` is a file): ref locks live in the
    common git dir, not the worktree's own."""
    git(kit.other, "push", "-q", "origin", "main:side")
    git(kit.local, "fetch", "-q", "origin")
    wt = kit.tmp / "wt"
    git(kit.local, "worktree", "add", "-q", "-b", "side", str(wt), "origin/side")
    repoint(kit, wt, branch="side")
    git(kit.other, "checkout", "-q", "-b", "side", "origin/main")
    new = commit(kit.other, "s.txt", "side\n")
    git(kit.other, "push", "-q", "origin", "side")
    lock = kit.local / ".git" / "refs" / "heads" / "side.lock"
    lock.write_text("")
    s = step(await kit.run())
    assert s["error"].startswith("broken: refs/heads/side.lock is present"), s
    assert git(wt, "status", "--porcelain") == "" and not (wt / "s.txt").exists()
    lock.unlink()
    rec = await kit.run()
    assert rec["status"] == "ok" and git(wt, "rev-parse", "HEAD") == new, rec


async def test_no_upstream_configured_is_not_needed(kit: Kit) -> None:
    """The job names remote and branch itself: a branch without tracking config works."""
    git(kit.local, "branch", "--unset-upstream")
    new = kit.upstream_commit("b.txt", "theirs\n")
    rec = await kit.run()
    assert rec["status"] == "ok" and kit.tip(kit.local) == new, rec


async def test_a_remote_path_on_a_fifo_times_out_as_upstream_unavailable(kit: Kit) -> None:
    """git opens a remote path that is a file to look for a bundle: a FIFO blocks it."""
    await kit.runner.close()
    kit = make_kit(kit.tmp, timeout_s=2)
    fifo = kit.tmp / "remote.fifo"
    os.mkfifo(fifo)
    git(kit.local, "remote", "set-url", "origin", str(fifo))
    before = snapshot(kit.local)
    s = step(await kit.run())
    assert s["error"].startswith("upstream_unavailable: fetch from origin"), s
    assert snapshot(kit.local) == before


async def test_no_repos_configured_is_a_run_that_says_so(kit: Kit) -> None:
    runner = kit.runner
    runner.config = replace(runner.config, backup_repair=replace(
        runner.config.backup_repair, repos=()))
    for dry_run in (True, False):
        rec = await runner.run("backup-repair", dry_run=dry_run)
        # ok (the 10-minute timer's unit must not fail), but no longer silently: the
        # reason says nothing is configured
        assert (rec["status"], rec["steps"]) == ("ok", [])
        assert "no repos configured (backup_repair.repos)" in rec["reason"]
