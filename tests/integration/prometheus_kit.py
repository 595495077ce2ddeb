"""A real Prometheus (Debian's) on 127.0.0.1 with node_exporter-shaped data backfilled by promtool.

``node_series(end)`` writes OpenMetrics text for the 7 days (plus 1 h) before
``end``, one sample a minute: steal counters rising 0.04 and 0.02 s/s on two
CPUs (average steal 3.0 %), MemAvailable alternating 2 and 4 GB (average
3.0 GB), swap used 100 MB with one 700 MB peak, and two filesystems.
``promtool tsdb create-blocks-from openmetrics`` turns it into blocks that
``prometheus`` serves from its data dir.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STEP_S = 60
SPAN_S = 7 * 86400 + 3600


def _gauge(name: str, labels: str, values: list[tuple[float, float]]) -> list[str]:
    return [f"{name}{{{labels}}} {v:.17g} {t:.0f}" for t, v in values]


def node_series(end: float) -> str:
    """OpenMetrics text (``# EOF``-terminated) of the series described in the module doc."""
    times = [end - SPAN_S + i * STEP_S for i in range(SPAN_S // STEP_S + 1)]
    peak_at = times[len(times) // 2]
    lines = ["# TYPE node_cpu_seconds_total counter"]
    for cpu, per_s in (("0", 0.04), ("1", 0.02)):
        lines += _gauge("node_cpu_seconds_total", f'cpu="{cpu}",mode="steal"',
                        [(t, (t - times[0]) * per_s) for t in times])
    lines.append("# TYPE node_memory_MemAvailable_bytes gauge")
    lines += _gauge("node_memory_MemAvailable_bytes", 'instance="vm1"',
                    [(t, 2e9 if i % 2 else 4e9) for i, t in enumerate(times)])
    lines.append("# TYPE node_memory_SwapTotal_bytes gauge")
    lines += _gauge("node_memory_SwapTotal_bytes", 'instance="vm1"', [(t, 4e9) for t in times])
    lines.append("# TYPE node_memory_SwapFree_bytes gauge")
    lines += _gauge("node_memory_SwapFree_bytes", 'instance="vm1"',
                    [(t, 3.3e9 if t == peak_at else 3.9e9) for t in times])
    for metric, root, other in (("size", 100e9, 50e9), ("free", 30e9, 40e9),
                                ("avail", 25e9, 35e9)):
        lines.append(f"# TYPE node_filesystem_{metric}_bytes gauge")
        for mount, value in (("/", root), ("/other", other)):
            lines += _gauge(f"node_filesystem_{metric}_bytes", f'mountpoint="{mount}"',
                            [(t, value) for t in times])
    return "\n".join([*lines, "# EOF", ""])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("prometheus not ready in time")


def missing_tools() -> str | None:
    """Why the real Prometheus cannot run here, or None."""
    gone = [t for t in ("prometheus", "promtool") if shutil.which(t) is None]
    return f"not installed: {', '.join(gone)} (apt-get install prometheus)" if gone else None


@contextmanager
def prometheus_with(openmetrics: str, work: Path, *, retention: str = "30d",
                    max_block: str = "") -> Iterator[str]:
    """Backfill ``openmetrics`` and serve it on 127.0.0.1; yields the base URL.

    ``retention``: Prometheus deletes blocks older than this at start (longer than the
    backfilled span, or its oldest days vanish).  ``max_block`` (e.g. ``240h``): promtool's
    ``--max-block-duration``; promtool reads the input once per block, so weeks of history
    backfill in 1 s with 240 h blocks against ~40 s with the default 2 h."""
    data, source = work / "tsdb", work / "series.om"
    data.mkdir(parents=True)
    source.write_text(openmetrics)
    block = [f"--max-block-duration={max_block}"] if max_block else []
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", *block,
                    str(source), str(data)], check=True, capture_output=True, timeout=300)
    (work / "prometheus.yml").write_text("global:\n  scrape_interval: 1h\n")
    url = f"http://127.0.0.1:{_free_port()}"
    log = (work / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={work / 'prometheus.yml'}",
         f"--storage.tsdb.path={data}", f"--storage.tsdb.retention.time={retention}",
         f"--web.listen-address={url.removeprefix('http://')}"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
