"""Debian's prometheus-node-exporter as a yardstick: our own instance, its /metrics scrape.

:func:`spawn_node_exporter` starts ``/usr/bin/prometheus-node-exporter`` with
its default collectors on ``127.0.0.1:<free port>`` and a textfile folder
under the bench's temp dir (never /var/lib/prometheus/node-exporter); the
agent's own textfile is written there, as on the VM.  :func:`scrape_phase`
measures ``GET /metrics`` with bench/loadgen.py's loops (through
bench/scrapeload.py: TCP, chunked answers) in the same modes as the
agent's ``GET /v1/health``.  A scrape is a much bigger answer (every
collector's series, tens of KB) than a health sample (~1 KB):
:func:`answer_bytes` reports both.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import common, health
from bench.scrapeload import answer_sizes

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def version() -> str:
    """``node_exporter, version 1.5.0 (...)``: the first line of ``--version``."""
    done = subprocess.run([NODE_EXPORTER, "--version"], capture_output=True, text=True,
                          timeout=10, check=False)
    return (done.stdout or done.stderr).splitlines()[0].strip()


def spawn_node_exporter(work: Path, textfile_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start it on a free port; (process, ``127.0.0.1:PORT``) once /metrics answers (30 s).

    Raises RuntimeError when it exits or does not answer in time.
    """
    work.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    argv = [NODE_EXPORTER, f"--web.listen-address={address}",
            f"--collector.textfile.directory={textfile_dir}"]
    with open(work / "node-exporter.log", "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            answer_sizes(address, "/metrics")
            return proc, address
        except OSError as exc:
            if proc.poll() is not None or time.monotonic() > deadline:
                common.stop(proc)
                raise RuntimeError(f"node_exporter on {address} not answering "
                                   f"(exit {proc.returncode}); see {work}/node-exporter.log"
                                   ) from exc
            time.sleep(0.1)


def scrape(address: str, mode: str, args: Any, pid: int) -> dict[str, Any]:
    """One bench/scrapeload.py run of ``GET /metrics``; its summary and node_exporter's
    CPU per request (us).  Raises RuntimeError when the loader fails."""
    return health.run_loader("bench.scrapeload", ["--socket", address, "--path", "/metrics"],
                             mode, (args.scrape_requests, args.scrape_warmup), args, pid)


def scrape_phase(address: str, pid: int, args: Any) -> dict[str, Any]:
    """``GET /metrics`` in the modes seq, conn and conc; answer sizes as sent and gzipped."""
    out: dict[str, Any] = {mode: scrape(address, mode, args, pid)
                           for mode in ("seq", "conn", "conc")}
    out["bytes"] = answer_sizes(address, "/metrics")
    out["bytes_gzip"] = answer_sizes(address, "/metrics", gzip=True)
    return out


def failed_collectors(work: Path) -> list[str]:
    """Collectors node_exporter logged as failed (``msg="collector failed" name=X``)."""
    text = (work / "node-exporter.log").read_text(errors="replace")
    return sorted(set(re.findall(r'msg="collector failed" name=(\S+)', text)))


def answer_bytes(sock: Path, path: str, timeout_s: float = 10.0) -> dict[str, int]:
    """One ``GET path`` over a Unix socket (``Connection: close``): ``{total_bytes,
    head_bytes}`` as sent.  Raises OSError."""
    request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    data = bytearray()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(str(sock))
        s.sendall(request.encode("ascii"))
        while chunk := s.recv(65536):
            data += chunk
    return {"total_bytes": len(data), "head_bytes": data.find(b"\r\n\r\n") + 4}
