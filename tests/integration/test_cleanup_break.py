"""Attacks on the cleanup job with a real Docker engine and real files.

Each test is a defect found by trying to break cleanup as a user would hit
it on a busy VM: a tag moved to a new image (``docker pull``) or removed
between the plan and the run, a dockerd that dies or stops answering in the
middle of the aged-image removals, an odd ``build_cache_age_s``, and a file
that cannot be deleted and whose name is not UTF-8.

The Docker tests use an engine of this module's own (started like the
session's, see conftest.py): the aged-image step removes every old unused
image of an engine, so it must not see other tests' images.  Dockerd
"dying" or "hanging" is a small Unix-socket proxy in front of that engine
(:class:`FaultProxy`): it passes bytes both ways until the Nth ``DELETE``
request, then drops every connection and stops listening (what a client of
a crashed dockerd sees) or holds the request unanswered (a hung dockerd).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.audit import Auditor
from agent.config import CleanupConfig, CleanupModes, Config, DockerConfig, PathRetentionRule
from agent.containers.engine import DockerEngine
from agent.hold import HoldStore
from agent.jobs.base import JobContext
from agent.jobs.cleanup import CleanupJob
from agent.journal import JournalWriter
from tests.engine_fixture import missing_prerequisite, started_engine
from tests.integration import cleanup_kit as kit
from tests.integration.dockerd import TestEngine
from tests.integration.test_cleanup import make_runner, steps

pytestmark = pytest.mark.integration

AGED = ("docker_aged_images",)


@pytest.fixture(scope="module")
def own_engine() -> Iterator[TestEngine]:
    with started_engine(missing_prerequisite("integration")) as engine:
        yield engine


@pytest.fixture
def docker(own_engine: TestEngine) -> Iterator[TestEngine]:
    """The module's engine; images a test loaded are removed after it."""
    client = own_engine.client()
    before = kit.image_ids(client)
    yield own_engine
    for image_id in kit.image_ids(client) - before:
        client.api.remove_image(image_id, force=True)


def aged_config(**changes: Any) -> CleanupConfig:
    cfg = CleanupConfig(modes=CleanupModes(standard=AGED, weekly=AGED, monthly=AGED),
                        image_age_days=365, keep_images=(), keep_labels=())
    return replace(cfg, **changes)


def context(tmp: Path, host: str, cleanup: CleanupConfig) -> JobContext:
    """What the job runner hands a job, for calling plan() and execute() one by one."""
    cfg = replace(Config(), state_dir=str(tmp / "state"), run_dir=str(tmp / "run"),
                  docker=DockerConfig(host=host, timeout_s=20), cleanup=cleanup)

    async def measure(_mounts: Any) -> tuple[()]:
        return ()

    return JobContext(run_id=1, job="cleanup", mode="weekly", dry_run=False, config=cfg,
                      services=SimpleNamespace(docker=DockerEngine(host, 20)),
                      auditor=Auditor(JournalWriter(socket_path=str(tmp / "no.sock"),
                                                    stream=io.StringIO())),
                      hold=HoldStore(cfg.state_dir), mounts=(), measure=measure)


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


async def test_tag_moved_to_a_new_image_since_the_plan_keeps_the_new_image(
        docker: TestEngine, tmp_path: Path) -> None:
    """``vmt/app:latest`` is old and unused at plan time; before the step runs, a
    ``docker pull``/build moves the tag to a new image.  Removing by tag deleted the
    *new* image (created today, never selected).  Now only a tag that still names the
    planned image is removed, and the record says the tag moved."""
    client = docker.client()
    old = kit.load_image(client, tag="vmt/app:latest", created=kit.OLD,
                         layers=[kit.random_layer(50_000)])
    job, ctx = CleanupJob(), context(tmp_path, docker.host, aged_config())
    [step] = await job.plan(ctx, "weekly")
    assert "vmt/app:latest" in step.detail
    new = kit.load_image(client, tag="vmt/app:latest", created=now_rfc3339(),
                         layers=[kit.random_layer(60_000)])

    result = await job.execute(ctx, step, dry_run=False)

    assert new in kit.image_ids(client)
    assert client.images.get("vmt/app:latest").id == new
    assert old in kit.image_ids(client)  # now dangling: the dangling step's business
    assert result.status == "ok", result
    assert "tag now names another image: vmt/app:latest" in result.detail
    assert result.freed_bytes == 0


async def test_tag_removed_by_someone_else_since_the_plan_is_no_failure(
        docker: TestEngine, tmp_path: Path) -> None:
    """An image with two tags; an operator removes one (a 404 mid-pass) between the plan
    and the run.  The step failed at the 404 and left the image with its other tag; now
    the missing tag is skipped and the image goes."""
    client = docker.client()
    image_id = kit.load_image(client, tag="vmt/two:a", created=kit.OLD,
                              layers=[kit.random_layer(70_000)])
    client.api.tag(image_id, "vmt/two", "b")
    unique = {i["Id"]: i for i in client.df()["Images"]}[image_id]
    job, ctx = CleanupJob(), context(tmp_path, docker.host, aged_config())
    [step] = await job.plan(ctx, "weekly")
    client.api.remove_image("vmt/two:a")

    result = await job.execute(ctx, step, dry_run=False)

    assert image_id not in kit.image_ids(client)
    assert result.status == "ok", result
    assert result.freed_bytes == unique["Size"] - max(unique["SharedSize"], 0)


class FaultProxy:
    """A Unix socket at ``path`` passing bytes to and from the engine at ``target`` until
    the client sends DELETE request number ``after + 1``; that request is never
    forwarded.  ``mode="dead"``: every connection is dropped and the socket stops
    listening (connection refused from then on).  ``mode="hung"``: nothing more is
    forwarded; connections stay open, unanswered, until :meth:`close`."""

    def __init__(self, target: str, path: str, *, mode: str, after: int) -> None:
        self.target, self.path, self.mode, self.after = target, path, mode, after
        self.deletes = 0
        self.tripped = threading.Event()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(16)
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self.tripped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            with self._lock:
                self._socks += [client, upstream]
            for src, dst, watch in ((client, upstream, True), (upstream, client, False)):
                thread = threading.Thread(target=self._pump, args=(src, dst, watch),
                                          daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket, watch: bool) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            if watch and self._trips(data):
                return
            if self.tripped.is_set():
                return
            try:
                dst.sendall(data)
            except OSError:
                return

    def _trips(self, data: bytes) -> bool:
        with self._lock:
            self.deletes += data.count(b"DELETE /")
            if self.deletes <= self.after and not self.tripped.is_set():
                return False
            self.tripped.set()
        if self.mode == "dead":
            self._drop_all()
        return True

    def _drop_all(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, []
        for s in [self._listener, *socks]:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.tripped.set()
        self._drop_all()
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.mark.parametrize(("mode", "code"), [("dead", "upstream_unavailable"),
                                           ("hung", "timeout")])
async def test_docker_failing_mid_removals_is_recorded(docker: TestEngine, mode: str,
                                                       code: str) -> None:
    """Two aged images; dockerd dies (or stops answering) after the first is removed.
    The step raised, so its record said only "upstream_unavailable" and nothing of the
    image already deleted.  Now the record names what went, what was not tried, and
    the bytes freed (estimated from the ``system df`` before)."""
    client = docker.client()
    ids = {kit.load_image(client, tag=f"vmt/aged-{n}:1", created=kit.OLD,
                          layers=[kit.random_layer(40_000 + n * 1000)]): f"vmt/aged-{n}:1"
           for n in (1, 2)}
    df_before = {i["Id"]: i for i in client.df()["Images"]}
    short = Path(tempfile.mkdtemp(prefix="vmt-proxy-", dir="/tmp"))  # a short socket path
    proxy = FaultProxy(docker.socket_path, str(short / "d.sock"), mode=mode, after=1)
    try:
        runner, _hold = make_runner(short, f"unix://{proxy.path}",
                                    aged_config(docker_timeout_s=2))
        record = await runner.run("cleanup", mode="weekly")
    finally:
        proxy.close()
        shutil.rmtree(short, ignore_errors=True)

    assert proxy.tripped.is_set()
    gone = set(ids) - kit.image_ids(client)
    assert len(gone) == 1, gone
    [gone_id] = gone
    [left_id] = set(ids) - gone
    step = steps(record)["docker_aged_images"]
    assert step["status"] == "failed"
    assert step["detail"].startswith("removed 1 images")
    assert ids[gone_id] in step["detail"]
    assert f"error {ids[left_id]}: Docker failed ({code}: " in step["error"]
    unique = df_before[gone_id]["Size"] - max(df_before[gone_id]["SharedSize"], 0)
    assert step["freed_bytes"] == unique > 40_000
    assert record["status"] == "failed"


async def test_build_cache_age_beyond_go_duration_dry_run_equals_real(
        docker: TestEngine, tmp_path: Path) -> None:
    """``build_cache_age_s: 1e10`` (config allows any value >= 0): the dry-run said "0
    records", the real run failed, Docker refusing the ``until`` filter (Go's
    ``time.Duration`` ends at ~292 years).  Both now agree: nothing is that old."""
    client = docker.client()
    kit.buildkit_build(client, "vmt/bk-age:1", {"Dockerfile": b"FROM scratch\nCOPY a /a\n",
                                                "a": os.urandom(30_000)})
    client.api.remove_image("vmt/bk-age:1")
    cache = kit.build_cache_ids(client)
    assert cache
    cfg = replace(aged_config(), modes=CleanupModes(standard=("docker_build_cache",)),
                  build_cache_age_s=1e10, build_cache_all_in=())
    runner, _hold = make_runner(tmp_path, docker.host, cfg)
    dry = await runner.run("cleanup", mode="standard", dry_run=True)
    real = await runner.run("cleanup", mode="standard")
    assert real["status"] == "ok", real
    assert steps(real)["docker_build_cache"]["freed_bytes"] == steps(dry)[
        "docker_build_cache"]["freed_bytes"] == 0
    assert kit.build_cache_ids(client) == cache
    client.api.prune_builds(all=True)  # the module's engine only


@pytest.fixture
def undeletable(tmp_path: Path) -> Iterator[tuple[Path, Path, bytes]]:
    """``(root, a deletable old log, an immutable old log named with a Latin-1 byte)``;
    the immutable flag is cleared again after the test."""
    root = tmp_path / "pg"
    root.mkdir()
    deletable = root / "postgresql-1.log"
    deletable.write_bytes(os.urandom(8192))
    bad = os.fsencode(root) + b"/postgresql-\xe9t\xe9.log"
    with open(bad, "wb") as out:
        out.write(os.urandom(8192))
    stamp = time.time() - 30 * 86400
    for path in (os.fsencode(deletable), bad):
        os.utime(path, (stamp, stamp))
    done = subprocess.run(["chattr", "+i", bad], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i not supported here: {done.stderr.strip()}")
    try:
        yield root, deletable, bad
    finally:
        subprocess.run(["chattr", "-i", bad], check=True)


async def test_undeletable_file_with_non_utf8_name_is_recorded(
        tmp_path: Path, undeletable: tuple[Path, Path, bytes]) -> None:
    """A retention root holds an old log named with a Latin-1 byte that cannot be deleted
    (immutable; a read-only mount gives the same OSError).  The error text carried the
    raw name, SQLite refused it, and the whole run ended "runner error" with no step
    recorded, although other files were already deleted.  Now the name is escaped and
    the step is recorded."""
    root, deletable, _bad = undeletable
    cfg = CleanupConfig(modes=CleanupModes(standard=("path_retention",)),
                        path_retention=(PathRetentionRule(root=str(root), globs=("*.log",),
                                                          days=14),))
    runner, _hold = make_runner(tmp_path, "unix:///nonexistent.sock", cfg)
    record = await runner.run("cleanup", mode="standard")
    step = steps(record)["path_retention"]
    assert not deletable.exists()
    assert os.listdir(os.fsencode(root)) == [b"postgresql-\xe9t\xe9.log"]
    assert step["status"] == "failed"
    assert step["error"] == "postgresql-\\xe9t\\xe9.log: Operation not permitted"
    assert step["detail"].startswith("deleted 1 files")
    assert step["freed_bytes"] == 8192
    assert record["reason"] == "1 of 1 steps failed: path_retention"
