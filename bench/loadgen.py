"""A cheap HTTP/1.1 load generator for a Unix socket, run as its own process.

``python -m bench.loadgen --socket PATH --mode seq|conn|conc ...`` prints one
JSON object on stdout:

- ``seq``: one keep-alive connection, ``--warmup`` then ``--requests``
  requests one after the other; latency of each (send to last body byte);
- ``conn``: a new connection per request (connect, send with
  ``Connection: close``, read, close); latency includes the connect;
- ``conc``: ``--clients`` keep-alive connections driven by one ``epoll``
  loop, each sending its next request as soon as its answer is complete;
  ``--warmup-s`` seconds uncounted, then ``--duration-s`` seconds counted.

The request bytes are built once; an answer is read by its
``Content-Length`` (no chunked encoding: both servers under test send a
length).  A status other than 200 counts as an error.  Every loop is bounded
by ``--max-seconds`` of wall time as well as its count.  ``loader_cpu_s`` is
this process's own CPU time (``getrusage``) so a report can show the loader
was not the bottleneck.
"""

from __future__ import annotations

import argparse
import json
import resource
import selectors
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HEADER_END = b"\r\n\r\n"
RECV_BYTES = 65536


class LoadError(RuntimeError):
    """The server closed early, sent something unreadable, or a bound was hit."""


def request_bytes(path: str, *, close: bool) -> bytes:
    """The whole GET request for ``path``; ``close`` adds ``Connection: close``."""
    extra = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n".encode("ascii")


def response_length(buf: bytes | bytearray) -> int | None:
    """Total bytes of the first response in ``buf`` (head + body), None while incomplete.

    Raises LoadError when the head has no ``Content-Length``.
    """
    end = buf.find(HEADER_END)
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        raise LoadError(f"no Content-Length in {bytes(buf[:end])[:200]!r}")
    start = at + len(b"\r\ncontent-length:")
    stop = head.find(b"\r\n", start)
    value = head[start:] if stop < 0 else head[start:stop]
    total = end + len(HEADER_END) + int(value.strip())
    return total if len(buf) >= total else None


def status_ok(buf: bytes | bytearray) -> bool:
    """True when the response in ``buf`` starts ``HTTP/1.x 200``."""
    return bytes(buf[9:12]) == b"200"


def read_response(sock: socket.socket, buf: bytearray) -> bool:
    """Read one response from blocking ``sock`` (``buf`` keeps leftovers); True if 200."""
    while (total := response_length(buf)) is None:
        chunk = sock.recv(RECV_BYTES)
        if not chunk:
            raise LoadError("server closed the connection mid-response")
        buf += chunk
    ok = status_ok(buf)
    del buf[:total]
    return ok


def connect(path: str, timeout_s: float) -> socket.socket:
    """A blocking AF_UNIX stream socket connected to ``path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    sock.connect(path)
    return sock


@dataclass
class Tally:
    """What one run saw: per-request latencies (ns) and errors."""

    latencies_ns: list[int] = field(default_factory=list)
    errors: int = 0
    done: int = 0

    def record(self, started_ns: int, *, ok: bool, counted: bool = True) -> None:
        self.done += 1
        if not ok:
            self.errors += 1
        if counted:
            self.latencies_ns.append(time.perf_counter_ns() - started_ns)


def _timed_loop(n: int, deadline: float, one: Callable[[], bool], tally: Tally,
                *, counted: bool) -> None:
    for _ in range(n):
        if time.monotonic() > deadline:
            raise LoadError(f"bound of --max-seconds hit after {tally.done} requests")
        started = time.perf_counter_ns()
        tally.record(started, ok=one(), counted=counted)


def run_seq(args: argparse.Namespace, deadline: float) -> Tally:
    """Keep-alive, one request at a time."""
    req, buf, tally = request_bytes(args.path, close=False), bytearray(), Tally()
    with connect(args.socket, args.timeout_s) as sock:
        def one() -> bool:
            sock.sendall(req)
            return read_response(sock, buf)
        _timed_loop(args.warmup, deadline, one, tally, counted=False)
        _timed_loop(args.requests, deadline, one, tally, counted=True)
    return tally


def run_conn(args: argparse.Namespace, deadline: float) -> Tally:
    """A new connection for every request."""
    req, tally = request_bytes(args.path, close=True), Tally()

    def one() -> bool:
        with connect(args.socket, args.timeout_s) as sock:
            sock.sendall(req)
            return read_response(sock, bytearray())
    _timed_loop(args.warmup, deadline, one, tally, counted=False)
    _timed_loop(args.requests, deadline, one, tally, counted=True)
    return tally


@dataclass
class _Client:
    sock: socket.socket
    buf: bytearray = field(default_factory=bytearray)
    sent_ns: int = 0


class Concurrent:
    """``clients`` keep-alive connections in one selector loop."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.req = request_bytes(args.path, close=False)
        self.sel = selectors.DefaultSelector()
        self.tally = Tally()
        self.clients = [_Client(connect(args.socket, args.timeout_s))
                        for _ in range(args.clients)]
        for client in self.clients:
            client.sock.setblocking(False)
            self.sel.register(client.sock, selectors.EVENT_READ, client)

    def _send(self, client: _Client) -> None:
        client.sent_ns = time.perf_counter_ns()
        client.sock.send(self.req)  # 40 bytes into an empty socket buffer: never partial

    def _on_readable(self, client: _Client, *, counted: bool) -> None:
        chunk = client.sock.recv(RECV_BYTES)
        if not chunk:
            raise LoadError("server closed a keep-alive connection")
        client.buf += chunk
        if (total := response_length(client.buf)) is None:
            return
        self.tally.record(client.sent_ns, ok=status_ok(client.buf), counted=counted)
        del client.buf[:total]
        self._send(client)

    def _drive(self, until: float, *, counted: bool) -> int:
        start_done = self.tally.done
        while time.monotonic() < until:
            for key, _ in self.sel.select(timeout=0.5):
                self._on_readable(key.data, counted=counted)
        return self.tally.done - start_done

    def run(self, warmup_s: float, duration_s: float) -> tuple[Tally, int, float]:
        """Warm up, then count; returns (tally, counted requests, counted seconds)."""
        for client in self.clients:
            self._send(client)
        self._drive(time.monotonic() + warmup_s, counted=False)
        started = time.monotonic()
        counted = self._drive(started + duration_s, counted=True)
        return self.tally, counted, time.monotonic() - started

    def close(self) -> None:
        self.sel.close()
        for client in self.clients:
            client.sock.close()


def run_conc(args: argparse.Namespace) -> tuple[Tally, int, float]:
    """Throughput of ``--clients`` concurrent keep-alive clients."""
    if args.warmup_s + args.duration_s > args.max_seconds:
        raise LoadError("--warmup-s + --duration-s exceed --max-seconds")
    runner = Concurrent(args)
    try:
        return runner.run(args.warmup_s, args.duration_s)
    finally:
        runner.close()


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen mode; the JSON-ready result (latencies in ns, sorted)."""
    cpu0, wall0 = _cpu_s(), time.monotonic()
    deadline = wall0 + args.max_seconds
    result: dict[str, Any] = {"mode": args.mode}
    if args.mode == "conc":
        tally, counted, seconds = run_conc(args)
        result |= {"clients": args.clients, "counted": counted, "counted_s": seconds,
                   "throughput_rps": counted / seconds if seconds > 0 else 0.0}
    else:
        tally = (run_seq if args.mode == "seq" else run_conn)(args, deadline)
    result |= {"requests_total": tally.done, "errors": tally.errors,
               "latencies_ns": sorted(tally.latencies_ns),
               "loader_cpu_s": _cpu_s() - cpu0, "loader_wall_s": time.monotonic() - wall0}
    return result


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loadgen", description=__doc__.splitlines()[0])
    p.add_argument("--socket", required=True, help="Unix socket of the server")
    p.add_argument("--path", default="/v1/health", help="request path")
    p.add_argument("--mode", choices=("seq", "conn", "conc"), required=True)
    p.add_argument("--requests", type=int, default=2000, help="counted requests (seq, conn)")
    p.add_argument("--warmup", type=int, default=200, help="uncounted requests first")
    p.add_argument("--clients", type=int, default=32, help="connections (conc)")
    p.add_argument("--warmup-s", type=float, default=1.0, help="uncounted seconds (conc)")
    p.add_argument("--duration-s", type=float, default=5.0, help="counted seconds (conc)")
    p.add_argument("--timeout-s", type=float, default=10.0, help="socket timeout")
    p.add_argument("--max-seconds", type=float, default=120.0, help="wall-time bound")
    return p


def main(argv: list[str] | None = None) -> int:
    """Print the JSON result; exit 1 with the reason on stderr on a LoadError/OSError."""
    args = _parser().parse_args(argv)
    try:
        result = measure(args)
    except (LoadError, OSError) as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
