"""Cleanup job timings: a dry run and a real run through the agent, over the bench's own engine.

The agent's cleanup settings here (:func:`cleanup_settings`) keep every step
on things this bench created: the Docker steps act on the test engine (the
agent's ``docker.host``), ``path_retention`` on a folder under the bench's
temp dir, and the host steps (``journal_vacuum``, ``apt``, ``pnpm_store``)
are in no mode; their folders point into the temp dir as well, in case.

:func:`make_garbage` creates, with tests/integration/cleanup_kit.py, dangling
images, tagged images created in 2020 (one of them used by a stopped
container, so kept), exited containers, and old and new files;
:func:`cleanup_phase` times ``POST /v1/jobs/cleanup/run`` with
``dry_run: true`` then ``false`` and checks what the real run removed.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.containers import call
from tests.integration.cleanup_kit import OLD, image_ids, load_image, random_layer
from tests.integration.dockerd import TestEngine

MODE = "weekly"  # the mode with every Docker step (build cache, dangling, aged images)
STEPS = ["docker_build_cache", "docker_dangling_images", "docker_aged_images", "path_retention"]
LAYER_BYTES = 1_000_000
OLD_FILE_AGE_S = 30 * 86400
KEPT_TAG = "vmbench/kept:2020"


def cleanup_settings(tmp: Path) -> dict[str, Any]:
    """The agent's ``cleanup`` section for the bench (see the module docstring)."""
    for sub in ("retention", "journal", "apt-cache"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    return {"modes": {mode: list(STEPS) for mode in ("standard", "weekly", "monthly")},
            "path_retention": [{"root": str(tmp / "retention"), "globs": ["logs/*.log"],
                                "days": 14}],
            "journal_directory": str(tmp / "journal"), "apt_cache_dir": str(tmp / "apt-cache")}


def _files(root: Path, count: int) -> dict[str, list[Path]]:
    """``count`` old (30 days) and ``count`` new 64 KB log files under ``root/logs``."""
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    old_mtime = time.time() - OLD_FILE_AGE_S
    out: dict[str, list[Path]] = {"old": [], "new": []}
    for i in range(count):
        for kind in ("old", "new"):
            path = logs / f"{kind}-{i}.log"
            path.write_bytes(os.urandom(65536))
            if kind == "old":
                os.utime(path, (old_mtime, old_mtime))
            out[kind].append(path)
    return out


def make_garbage(engine: TestEngine, retention_root: Path, *, dangling: int, aged: int,
                 stopped: int, files: int) -> dict[str, Any]:
    """Create the things cleanup should remove and keep; their ids, names and paths."""
    client = engine.client()
    recent = datetime.now().astimezone().isoformat(timespec="seconds")
    made: dict[str, Any] = {
        "dangling": [load_image(client, tag=None, created=recent,
                                layers=[random_layer(LAYER_BYTES)]) for _ in range(dangling)],
        "aged": [load_image(client, tag=f"vmbench/aged-{i}:2020", created=OLD,
                            layers=[random_layer(LAYER_BYTES)]) for i in range(aged)],
        "kept": load_image(client, tag=KEPT_TAG, created=OLD, layers=[random_layer(LAYER_BYTES)]),
        "stopped": [engine.run_stopped(f"stopped-{i}").name for i in range(stopped)]}
    made["stopped"].append(client.containers.create(KEPT_TAG, name="stopped-kept",
                                                    network_mode="none").name)
    made["files"] = _files(retention_root, files)
    return made


def _timed(sock: Path, *, dry_run: bool) -> dict[str, Any]:
    """One cleanup run: client round trip and the steps' seconds (the record's started_at
    and finished_at have whole seconds), status, freed (dry run: planned) bytes, each step."""
    took, record = call(sock, "POST", "/v1/jobs/cleanup/run",
                        {"mode": MODE, "dry_run": dry_run, "wait": True})
    steps = [{k: s.get(k) for k in ("name", "status", "freed_bytes", "duration_s", "detail")}
             for s in record["steps"]]
    return {"client_s": took, "status": record["status"],
            "freed_bytes": record["freed_bytes"],
            "steps_s": sum(float(s["duration_s"] or 0) for s in steps), "steps": steps}


def _verify(engine: TestEngine, made: dict[str, Any]) -> dict[str, int]:
    """What is left after the real run; RuntimeError when it removed too much or too little."""
    ids = image_ids(engine.client())
    names = {c.name for c in engine.client().containers.list(all=True)}
    left = {"dangling_left": sum(i in ids for i in made["dangling"]),
            "aged_left": sum(i in ids for i in made["aged"]),
            "kept_image_left": int(made["kept"] in ids),
            "stopped_containers_left": sum(n in names for n in made["stopped"]),
            "old_files_left": sum(p.exists() for p in made["files"]["old"]),
            "new_files_left": sum(p.exists() for p in made["files"]["new"])}
    want = {"dangling_left": 0, "aged_left": 0, "kept_image_left": 1,
            "stopped_containers_left": len(made["stopped"]), "old_files_left": 0,
            "new_files_left": len(made["files"]["new"])}
    if left != want:
        raise RuntimeError(f"cleanup left {left}, expected {want}")
    return left


def cleanup_phase(engine: TestEngine, sock: Path, retention_root: Path, *, dangling: int = 10,
                  aged: int = 5, stopped: int = 10, files: int = 50) -> dict[str, Any]:
    """Garbage, dry run, real run, check; the bench's containers and kept image are removed
    afterwards.  Seconds are the client's round trip and the sum of the steps' own."""
    made = make_garbage(engine, retention_root, dangling=dangling, aged=aged,
                        stopped=stopped, files=files)
    try:
        dry = _timed(sock, dry_run=True)
        real = _timed(sock, dry_run=False)
        left = _verify(engine, made)
    finally:
        for name in made["stopped"]:
            engine.client().api.remove_container(name, force=True)
        engine.client().api.remove_image(made["kept"], force=True)
    return {"mode": MODE, "steps_configured": STEPS, "created": {
        "dangling_images": dangling, "aged_images": aged, "kept_aged_image": 1,
        "stopped_containers": len(made["stopped"]), "old_files": files, "new_files": files,
        "layer_bytes": LAYER_BYTES}, "dry_run": dry, "real_run": real, "after": left}
