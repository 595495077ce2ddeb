"""Shares of a py-spy profile: where the agent's event-loop thread spends its time.

``python -m bench.profile_summary FILE [--top 40] [--thread MainThread]`` reads
py-spy's ``--format raw`` output (one collapsed stack per line, ``frame;frame;... N``,
recorded with ``--threads``) and prints, for the thread whose name contains
``--thread``, each function's *inclusive* share (the function or anything it
calls) and *self* share (the sampled frame itself), as ``file function``.
Shares are of that thread's samples, so with an event loop kept busy by a load
generator they are shares of the per-request CPU.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path


def frame_name(frame: str) -> str:
    """``func (path/file.py:123)`` -> ``path/file.py func`` (the line number dropped)."""
    func, _, where = frame.rpartition(" (")
    return f"{where.rsplit(':', 1)[0]} {func}" if func else frame


def shares(lines: list[str], thread: str) -> tuple[int, collections.Counter[str],
                                                   collections.Counter[str]]:
    """(samples, inclusive counts, self counts) of the stacks of ``thread``."""
    total, inclusive, own = 0, collections.Counter[str](), collections.Counter[str]()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or thread not in frames[0]:
            continue
        n, names = int(count), [frame_name(f) for f in frames[1:]]
        total += n
        for name in set(names):
            inclusive[name] += n
        if names:
            own[names[-1]] += n
    return total, inclusive, own


def main(argv: list[str] | None = None) -> int:
    """Print both tables; exit 1 when the thread has no samples."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", type=Path)
    p.add_argument("--thread", default="MainThread", help="part of the thread's name")
    p.add_argument("--top", type=int, default=40)
    args = p.parse_args(argv)
    total, inclusive, own = shares(args.file.read_text().splitlines(), args.thread)
    if not total:
        print(f"no samples of a thread named like {args.thread!r}", file=sys.stderr)
        return 1
    print(f"{total} samples of {args.thread}")
    for title, table in (("inclusive", inclusive), ("self", own)):
        print(f"\n{title}:")
        for name, n in table.most_common(args.top):
            print(f"  {n / total:6.1%}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
