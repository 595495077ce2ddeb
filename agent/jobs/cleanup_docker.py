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
express keep patterns), the drop of ``LayersSize`` in ``GET /system/df``
(when Docker fails midway: the removed images' ``Size - SharedSize``).
A tag is removed only while it still names the planned image.

Never: volumes, containers, ``docker system prune``, ``force`` removal.
Blocking SDK calls run through :meth:`DockerEngine.call` (worker thread,
timeout ``cleanup.docker_timeout_s``).
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent.errors import AgentError
from agent.jobs.base import Step, StepResult

if TYPE_CHECKING:
    from docker import DockerClient

    from agent.containers.engine import DockerEngine

UNTIL_NOTE = "Docker's 'until' counts from the image's creation, not its last use"
NONE_TAG = "<none>:<none>"
#: The longest ``until`` Docker parses (Go ``time.Duration``: 2^63-1 ns), seconds.
GO_DURATION_MAX_S = (2**63 - 1) // 10**9


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
    age = min(int(step.args["age_s"]), GO_DURATION_MAX_S)  # Go's time.Duration limit
    filters: Any = {} if step.args["prune_all"] else {"until": f"{age}s"}
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

    A tag is removed only while it still names the planned image (a tag moved
    to a newer image since the plan is left alone), a tag already gone is no
    error, and an image a container started using since the plan is left
    alone.  When Docker fails midway the step stops and says which images and
    tags went before it (freed then estimated from the ``system df`` before).
    """
    before, used = await snapshot(engine)
    done: list[Removal] = []
    failure = None
    for image_id, names in step.args["images"]:
        done.append(removal := Removal(image_id, tuple(names)))
        if image_id in used:
            removal.note = "now used by a container"
            continue
        try:
            await engine.call(functools.partial(_untag, removal=removal))
        except AgentError as exc:  # Docker down or silent: stop here, report what went
            failure = removal.error = f"Docker failed ({exc.code}: {exc.message})"
            break
    freed, how = await _freed(engine, before, done, broken=failure is not None)
    errors = [r.describe() for r in done if r.error]
    return StepResult(step.name, "failed" if errors else "ok", freed,
                      detail=f"removed {sum(r.gone for r in done)} images ({UNTIL_NOTE}), "
                      f"{mb(freed)}{how}: {_outcomes(done)}", error="; ".join(errors) or None)


@dataclass
class Removal:
    """What removing one planned image did; filled in as it goes, so a failure midway
    still tells which tags went (``untagged``), which had moved to another image
    (``moved``), and whether the image is ``gone``."""

    image_id: str
    names: tuple[str, ...]
    untagged: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    gone: bool = False
    note: str = ""
    error: str | None = None

    @property
    def label(self) -> str:
        return self.names[0] if self.names else _short(self.image_id)

    def describe(self) -> str:
        """One line: ``vmt/a:1``, ``vmt/a:1 left (tag moved: vmt/a:1)``, ``error ...``."""
        parts = [f"untagged {', '.join(self.untagged)}"] if self.untagged and not self.gone else []
        parts += [f"tag now names another image: {', '.join(self.moved)}"] if self.moved else []
        parts += [self.note] if self.note else []
        said = "; ".join(parts)
        if self.error:
            return f"error {self.label}: {self.error}" + (f" ({said})" if said else "")
        return self.label if self.gone else f"{self.label} left ({said or 'still there'})"


def _untag(client: DockerClient, removal: Removal) -> None:
    """Remove each tag that still names ``removal.image_id`` (the last one deletes it)."""
    from docker.errors import APIError, NotFound

    for name in removal.names:
        try:
            if _image_id(client, name) != removal.image_id:
                removal.moved.append(name)
                continue
            client.api.remove_image(name, force=False, noprune=False)
            removal.untagged.append(name)
        except NotFound:
            continue  # removed since the plan: nothing left to do for this tag
        except APIError as exc:
            removal.error = str(exc.explanation or exc)
            return
    try:
        _image_id(client, removal.image_id)
    except NotFound:
        removal.gone = True


def _image_id(client: DockerClient, ref: str) -> str:
    """The id ``ref`` (a ``repo:tag`` or an id) names now (``GET /images/{ref}/json``)."""
    found: dict[str, Any] = client.api.inspect_image(ref)  # type: ignore[no-untyped-call]
    return str(found["Id"])


async def _freed(engine: DockerEngine, before: Mapping[str, Any], done: Sequence[Removal], *,
                 broken: bool) -> tuple[int, str]:
    """Bytes freed: the drop of ``LayersSize``; when Docker broke, the removed images'
    ``Size - SharedSize`` from ``before`` (and a note saying so)."""
    if broken:
        sizes = {i["Id"]: unique_size(i) for i in before.get("Images") or ()}
        return (sum(sizes.get(r.image_id, 0) for r in done if r.gone),
                " (estimated from docker system df before the run: Docker failed)")
    after, _ = await snapshot(engine)
    return max(int(before.get("LayersSize") or 0) - int(after.get("LayersSize") or 0), 0), ""


def _outcomes(done: Sequence[Removal]) -> str:
    return ", ".join(r.describe() for r in done if not r.error) or "none"


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]
