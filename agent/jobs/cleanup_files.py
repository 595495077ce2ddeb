"""The cleanup job's file-level pieces: journal vacuum rules, apt cache sizes, path retention.

Pure functions over directory trees whose roots are parameters (tests point
them at temp dirs).  Sizes are *allocated* bytes (``st_blocks * 512``, what
``du`` and journald count), and a file with other hard links frees nothing.

Journal: :func:`journal_vacuum_plan` mirrors journald's
``journal_directory_vacuum()`` (systemd 252, ``src/libsystemd/sd-journal/
journal-vacuum.c``): in one directory, archived files (``*@<seqnum_id>-
<seqnum>-<realtime>.journal``, ``*@<realtime>-<random>.journal~``) are
deleted oldest first (same ``seqnum_id``: by seqnum, else by realtime, the
file name's time or the file's own older ctime/atime/mtime) while the
directory's total (active files included) is above ``max_use`` or the file
is older than the retention limit.  :func:`parse_freed` sums journalctl's
"Vacuuming done, freed 1.2G of archived journals from ..." lines (systemd's
``format_bytes``: 1024-based, one decimal, so each line is exact to 0.1 of
its unit).
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

_ARCHIVED = re.compile(r".*@([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{16})\.journal")
_CORRUPTED = re.compile(r".*@([0-9a-f]{16})-[0-9a-f]{16}\.journal~")
_FREED = re.compile(r"freed (\d+(?:\.\d+)?)\s*([KMGTPE]?)(?:i?B)?\b")
_UNITS = "KMGTPE"


def allocated(st: os.stat_result) -> int:
    """Bytes a file frees when unlinked: ``st_blocks * 512``, 0 with other hard links."""
    return st.st_blocks * 512 if st.st_nlink <= 1 else 0


@dataclass(frozen=True)
class JournalFile:
    """An archived journal file: ``usage`` bytes, ``realtime`` µs since the epoch."""

    path: str
    usage: int
    realtime: int
    seqnum_id: str | None
    seqnum: int


def journal_scan(directory: str) -> tuple[list[JournalFile], int]:
    """``(archived files, total usage in bytes of every *.journal/*.journal~ file)``.

    Only the directory itself, not its sub-folders (as ``journalctl -D``).
    """
    archived, total = [], 0
    for entry in _entries(directory):
        st = entry.stat(follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or not entry.name.endswith((".journal", ".journal~")):
            continue
        usage = st.st_blocks * 512
        total += usage
        if (found := _archived(entry.path, entry.name, usage, st)) is not None:
            archived.append(found)
    return archived, total


def _entries(directory: str) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _archived(path: str, name: str, usage: int, st: os.stat_result) -> JournalFile | None:
    if m := _ARCHIVED.fullmatch(name):
        seqnum_id, seqnum, realtime = m.group(1), int(m.group(2), 16), int(m.group(3), 16)
    elif m := _CORRUPTED.fullmatch(name):
        seqnum_id, seqnum, realtime = None, 0, int(m.group(1), 16)
    else:
        return None
    times = (st.st_ctime_ns, st.st_atime_ns, st.st_mtime_ns)
    realtime = min([realtime, *(t // 1000 for t in times if t > 0)])
    return JournalFile(path, usage, realtime, seqnum_id, seqnum)


def journal_vacuum_plan(files: Sequence[JournalFile], total: int, *, max_use: int,
                        retention_s: float, now: float) -> list[JournalFile]:
    """The archived files journald deletes (bytes ``max_use``, 0 = no limit; seconds
    ``retention_s``, 0 = no limit; ``now`` unix seconds)."""
    limit = int((now - retention_s) * 1_000_000) if retention_s > 0 else 0
    chosen = []
    for f in sorted(files, key=_vacuum_key):
        if (not limit or f.realtime >= limit) and (max_use <= 0 or total <= max_use):
            break
        chosen.append(f)
        total = max(total - f.usage, 0)
    return chosen


def _compare(a: JournalFile, b: JournalFile) -> int:
    """journald's ``vacuum_compare()``: seqnum within one seqnum_id, else realtime."""
    if a.seqnum_id and a.seqnum_id == b.seqnum_id:
        return _cmp(a.seqnum, b.seqnum)
    if a.realtime != b.realtime:
        return _cmp(a.realtime, b.realtime)
    if a.seqnum_id and b.seqnum_id:
        return _cmp(a.seqnum_id, b.seqnum_id)
    return _cmp(os.path.basename(a.path), os.path.basename(b.path))


def _cmp(a: int | str, b: int | str) -> int:
    return int((a > b) - (a < b))  # type: ignore[operator]


_vacuum_key = functools.cmp_to_key(_compare)


def journal_dirs(directory: str, roots: Sequence[str] = ("/var/log/journal",
                                                          "/run/log/journal")) -> list[str]:
    """Folders ``journalctl --vacuum-*`` works on: ``directory``, or each root and its
    machine-id sub-folders."""
    if directory:
        return [directory]
    found = []
    for root in roots:
        found += [root, *sorted(e.path for e in _entries(root) if e.is_dir(follow_symlinks=False))]
    return [d for d in found if os.path.isdir(d)]


def parse_freed(output: str) -> int:
    """Sum of every "freed <size>" in journalctl's output, bytes (1024-based units)."""
    total = 0.0
    for number, unit in _FREED.findall(output):
        total += float(number) * 1024 ** (_UNITS.index(unit) + 1 if unit else 0)
    return round(total)


# --- apt ---------------------------------------------------------------------

def apt_cache_usage(archives: str, caches: Sequence[str]) -> int:
    """Bytes ``apt-get clean`` removes: every file but ``lock`` in ``<archives>``, its
    ``partial/`` and ``auxfiles/`` (apt's ``pkgAcquire::Clean``), and the package cache
    files ``caches`` (``Dir::Cache::pkgcache``/``srcpkgcache`` as ``apt-config``
    resolves them; empty when disabled, as in Debian's Docker images)."""
    root = Path(archives)
    paths = [p for d in (root, root / "partial", root / "auxfiles") for p in _listing(d)
             if p.name != "lock"] + [Path(c) for c in caches if c]
    total = 0
    for path in paths:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            total += allocated(st)
    return total


def _listing(directory: Path) -> list[Path]:
    return [Path(e.path) for e in _entries(str(directory))]


_APT_FREED = re.compile(r"After this operation, ([\d.,]+) ([kMGT]?B) disk space will be freed")


def parse_apt_freed(output: str) -> int:
    """Bytes apt says an operation frees ("After this operation, 1,234 kB ... freed";
    apt's SizeToStr is 1000-based); 0 when it does not say."""
    m = _APT_FREED.search(output)
    if not m:
        return 0
    unit = m.group(2)[0] if len(m.group(2)) > 1 else " "
    factor: int = 1000 ** " kMGT".index(unit)
    return round(float(m.group(1).replace(",", "")) * factor)


# --- path retention --------------------------------------------------------------

@dataclass(frozen=True)
class OldFile:
    """A file a retention rule selects: ``rel`` path under the root, ``freed`` bytes,
    ``inode`` ``(st_dev, st_ino)`` (the same file seen by two rules is one file)."""

    rel: str
    freed: int
    inode: tuple[int, int] = (0, 0)


def shown(rel: str) -> str:
    """``rel`` fit for a record, the journal and JSON: bytes that are not UTF-8 (kept by
    ``os`` as lone surrogates) as ``\\xff``, control characters as ``\\n``/``\\x1b``."""
    text = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def old_files(root: str, globs: Sequence[str], cutoff: float) -> Iterator[tuple[int, str, OldFile]]:
    """``(dir fd, name, OldFile)`` for regular files under ``root`` whose path relative to
    it matches a glob (fnmatch) and whose mtime is before ``cutoff`` (unix seconds).

    Walks with ``os.fwalk(follow_symlinks=False)``: no symbolic link is followed
    and none is selected; the fd is valid only until the next item.
    """
    for dirpath, _dirs, names, dirfd in os.fwalk(root, follow_symlinks=False):
        prefix = os.path.relpath(dirpath, root)
        for name in names:
            rel = name if prefix == "." else f"{prefix}/{name}"
            found = _old(dirfd, name, rel, globs, cutoff)
            if found is not None:
                yield dirfd, name, found


def _old(dirfd: int, name: str, rel: str, globs: Sequence[str], cutoff: float) -> OldFile | None:
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_mtime >= cutoff:
        return None
    if not any(fnmatch.fnmatchcase(rel, g) for g in globs):
        return None
    return OldFile(rel, allocated(st), (st.st_dev, st.st_ino))


def delete_old(root: str, globs: Sequence[str], cutoff: float, *,
               stop: threading.Event | None = None) -> tuple[list[OldFile], list[str]]:
    """Delete what :func:`old_files` selects; ``(deleted, errors)``.  Each file is
    re-checked and unlinked relative to its directory's fd (no path re-resolution).
    A file gone before its unlink (removed by someone else) is neither; an error names
    the file as :func:`shown` writes it.  Once ``stop`` is set (the step timed out or
    was cancelled while this runs in a worker thread) no further file is deleted."""
    deleted, errors = [], []
    for dirfd, name, found in old_files(root, globs, cutoff):
        if stop is not None and stop.is_set():
            break
        try:
            os.unlink(name, dir_fd=dirfd)
            deleted.append(found)
        except FileNotFoundError:
            continue
        except OSError as exc:
            errors.append(f"{shown(found.rel)}: {exc.strerror}")
    return deleted, errors
