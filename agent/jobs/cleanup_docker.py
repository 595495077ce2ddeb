"""The cleanup job's Docker steps: build cache, dangling images, aged images.

Figures come from Docker itself (Docker Engine API ``GET /system/df``, the
data behind ``docker system df -v``): a plan's estimate is

- build cache: the ``Size`` of each record the prune will select, mirroring
  BuildKit's rule (``cache/manager.go`` prune): not ``InUse``; unless
  pruning *all*, not ``Shared`` with an image and not of type ``internal`` or
  ``frontend``; ``LastUsedAt`` (absent: never used) older than the cutoff;
- images: ``Size - SharedSize`` per image (its layers no other image uses).
  Layers shared *only* among images removed together are not counted, so
  the estimate can be low then.

Freed bytes: ``SpaceReclaimed`` of ``POST /build/prune`` and ``POST
/images/prune``; for aged images, removed one by one (no prune filter can
express keep patterns), the drop of ``LayersSize`` in ``GET /system/df``.

Never: volumes, containers, ``docker system prune``, ``force`` removal.
Blocking SDK calls run through :meth:`DockerEngine.call` (worker thread,
timeout ``cleanup.docker_timeout_s``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent.jobs.base import Step, StepResult

if TYPE_CHECKING:
    from docker import DockerClient

    from agent.containers.engine import DockerEngine

UNTIL_NOTE = "Docker's 'until' counts from the image's creation, not its last use"
NONE_TAG = "<none>:<none>"


def mb(n: int) -> str:
    """Bytes as Docker prints them: decimal MB (10^6 bytes), one decimal."""
    return f"{n / 1e6:.1f} MB"


# --- pure selection (unit-tested) --------------------------------------------

def _timestamp(text: str | None) -> float | None:
    """Unix seconds of an RFC 3339 time from the API (nanoseconds cut); None if absent/zero."""
    if not text or text.startswith("0001-01-01"):
        return None
    return datetime.fromisoformat(text).timestamp()


def select_build_cache(records: Iterable[Mapping[str, Any]], *, cutoff: float | None,
                       prune_all: bool) -> list[Mapping[str, Any]]:
    """The records ``POST /build/prune`` removes (``cutoff``: unix seconds, None = any age)."""
    chosen = []
    for r in records:
        if r.get("InUse"):
            continue
        if not prune_all and (r.get("Shared") or r.get("Type") in ("internal", "frontend")):
            continue
        used = _timestamp(r.get("LastUsedAt"))
        if cutoff is not None and used is not None and used > cutoff:
            continue
        chosen.append(r)
    return chosen


def tags(image: Mapping[str, Any]) -> list[str]:
    """An image's ``repo:tag`` names (``<none>:<none>`` left out)."""
    return [t for t in image.get("RepoTags") or () if t != NONE_TAG]


def unique_size(image: Mapping[str, Any]) -> int:
    """Bytes only this image holds: ``Size - SharedSize`` (SharedSize -1: not computed)."""
    return int(image.get("Size") or 0) - max(int(image.get("SharedSize") or 0), 0)


def select_dangling(images: Iterable[Mapping[str, Any]],
                    used: set[str]) -> list[Mapping[str, Any]]:
    """Untagged images no container (running or stopped) uses."""
    return [i for i in images if not tags(i) and i["Id"] not in used]


def keep_match(image: Mapping[str, Any], *, patterns: Sequence[str],
               labels: Sequence[str]) -> str | None:
    """Why an image is kept (``tag ollama/ollama:latest matches ollama/*``), or None."""
    for tag in tags(image):
        for pattern in patterns:
            if fnmatch.fnmatchcase(tag, pattern):
                return f"tag {tag} matches {pattern}"
    have = image.get("Labels") or {}
    for label in labels:
        key, sep, value = label.partition("=")
        if key in have and (not sep or have[key] == value):
            return f"label {label}"
    return None


def select_aged(images: Iterable[Mapping[str, Any]], used: set[str], *, cutoff: float,
                patterns: Sequence[str], labels: Sequence[str]) -> list[Mapping[str, Any]]:
    """Tagged images created before ``cutoff`` (unix s), unused, matching no keep rule."""
    return [i for i in images
            if tags(i) and i["Id"] not in used and float(i.get("Created") or 0) < cutoff
            and keep_match(i, patterns=patterns, labels=labels) is None]


# --- Docker reads ------------------------------------------------------------

def _df_and_used(client: DockerClient) -> tuple[dict[str, Any], set[str]]:
    df = client.df()
    used = {str(c["ImageID"]) for c in client.api.containers(all=True)}
    return df, used


async def snapshot(engine: DockerEngine) -> tuple[dict[str, Any], set[str]]:
    """``(GET /system/df, ids of images any container uses)``."""
    return await engine.call(_df_and_used)


# --- steps ---------------------------------------------------------------------

async def plan_build_cache(engine: DockerEngine, name: str, *, age_s: float, prune_all: bool,
                           now: float) -> Step:
    """Build cache unused for ``age_s`` seconds (or all unused cache when ``prune_all``)."""
    df, _ = await snapshot(engine)
    cutoff = None if prune_all else now - age_s
    chosen = select_build_cache(df.get("BuildCache") or (), cutoff=cutoff, prune_all=prune_all)
    size = sum(int(r.get("Size") or 0) for r in chosen)
    scope = "all unused build cache" if prune_all else f"build cache unused for {age_s:g} s"
    return Step(name, name, f"{scope}: {len(chosen)} records, {mb(size)}", size,
                {"prune_all": prune_all, "age_s": age_s})


async def run_build_cache(engine: DockerEngine, step: Step) -> StepResult:
    """``POST /build/prune`` (``all`` or ``until=<age>s``); freed = SpaceReclaimed."""
    filters: Any = {} if step.args["prune_all"] else {"until": f"{int(step.args['age_s'])}s"}
    out = await engine.call(lambda c: c.api.prune_builds(
        filters=filters, all=bool(step.args["prune_all"])))
    deleted = out.get("CachesDeleted") or []
    freed = int(out.get("SpaceReclaimed") or 0)
    return StepResult(step.name, "ok", freed,
                      detail=f"removed {len(deleted)} build cache records, {mb(freed)}")


async def plan_dangling(engine: DockerEngine, name: str) -> Step:
    """Untagged images no container uses (what ``POST /images/prune?dangling=true`` removes)."""
    df, used = await snapshot(engine)
    chosen = select_dangling(df.get("Images") or (), used)
    size = sum(unique_size(i) for i in chosen)
    return Step(name, name, f"{len(chosen)} dangling images, {mb(size)}", size,
                {"images": tuple(_short(i["Id"]) for i in chosen)})


async def run_dangling(engine: DockerEngine, step: Step) -> StepResult:
    """``POST /images/prune`` with ``dangling=true``; freed = SpaceReclaimed."""
    out = await engine.call(lambda c: c.api.prune_images(  # type: ignore[no-untyped-call]
        filters={"dangling": True}))
    deleted = [d["Deleted"] for d in out.get("ImagesDeleted") or () if d.get("Deleted")]
    freed = int(out.get("SpaceReclaimed") or 0)
    return StepResult(step.name, "ok", freed,
                      detail=f"pruned dangling images ({len(deleted)} image/layer records "
                      f"deleted), {mb(freed)}")


async def plan_aged(engine: DockerEngine, name: str, *, days: float, now: float,
                    patterns: Sequence[str], labels: Sequence[str]) -> Step:
    """Tagged images created over ``days`` days ago, unused by any container, not kept."""
    df, used = await snapshot(engine)
    chosen = select_aged(df.get("Images") or (), used, cutoff=now - days * 86400,
                         patterns=patterns, labels=labels)
    size = sum(unique_size(i) for i in chosen)
    names = [tags(i)[0] for i in chosen]
    return Step(name, name, f"{len(chosen)} images created over {days:g} days ago and unused "
                f"({UNTIL_NOTE}), {mb(size)}: {', '.join(names) or 'none'}", size,
                {"images": tuple((i["Id"], tuple(tags(i))) for i in chosen)})


async def run_aged(engine: DockerEngine, step: Step) -> StepResult:
    """Untag each planned image (never forced); freed = drop of ``LayersSize``.

    An image a container started using since the plan is left alone.
    """
    before, used = await snapshot(engine)
    results = [await _remove_image(engine, image_id, names)
               for image_id, names in step.args["images"] if image_id not in used]
    after, _ = await snapshot(engine)
    freed = max(int(before.get("LayersSize") or 0) - int(after.get("LayersSize") or 0), 0)
    errors = [r for r in results if r.startswith("error")]
    removed = [r for r in results if not r.startswith("error")]
    return StepResult(step.name, "failed" if errors else "ok", freed,
                      detail=f"removed {len(removed)} images ({UNTIL_NOTE}), {mb(freed)}: "
                      f"{', '.join(removed) or 'none'}",
                      error="; ".join(errors) or None)


async def _remove_image(engine: DockerEngine, image_id: str, names: Sequence[str]) -> str:
    """Remove every tag of one image (the last removal deletes it); a short outcome."""
    from docker.errors import APIError

    def remove(client: DockerClient) -> str:
        try:
            for name in names:
                client.api.remove_image(name, force=False, noprune=False)
        except APIError as exc:
            return f"error {names[0] if names else _short(image_id)}: {exc.explanation or exc}"
        return names[0] if names else _short(image_id)

    return await engine.call(remove)


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]
