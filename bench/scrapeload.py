"""bench/loadgen.py against a TCP server that answers chunked, e.g. node_exporter's /metrics.

``python -m bench.scrapeload --socket 127.0.0.1:9100 --path /metrics --mode seq ...``
takes loadgen's arguments and prints loadgen's JSON; ``--socket`` is then
``HOST:PORT``.  Go's net/http sends an answer larger than its 2 KB buffer
with ``Transfer-Encoding: chunked`` (RFC 9112 section 7.1), which loadgen
(``Content-Length`` only) cannot read, and node_exporter listens on TCP, not
a Unix socket.  So this process swaps loadgen's ``connect`` and
``response_length`` for the two below and runs loadgen's own loops
unchanged: the same client code measures the agent, the baseline and
node_exporter.  (A ``--tcp`` option and chunked reading in loadgen itself
would make this module unnecessary.)
"""

from __future__ import annotations

import socket
import sys

from bench import loadgen

CRLF = b"\r\n"
_BY_CONTENT_LENGTH = loadgen.response_length  # kept before main() swaps it


def connect_tcp(path: str, timeout_s: float) -> socket.socket:
    """A blocking TCP socket connected to ``path`` = ``HOST:PORT`` (loadgen's ``--socket``;
    Nagle off, as an HTTP client does)."""
    host, _, port = path.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def chunked_end(buf: bytes | bytearray, start: int) -> int | None:
    """Offset just past a chunked body that begins at ``start`` (no trailers), None while
    incomplete.  Raises loadgen.LoadError on a chunk-size line that is not hex."""
    at = start
    while (eol := buf.find(CRLF, at)) >= 0:
        size_field = bytes(buf[at:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError:
            raise loadgen.LoadError(f"bad chunk size {size_field[:20]!r}") from None
        if size == 0:
            end = eol + 2 * len(CRLF)  # the last chunk, then the empty trailer line
            return end if len(buf) >= end else None
        at = eol + len(CRLF) + size + len(CRLF)
    return None


def response_length(buf: bytes | bytearray) -> int | None:
    """Total bytes of the first response in ``buf``: by ``Content-Length`` (loadgen's own
    reading) or, for ``Transfer-Encoding: chunked``, to its last chunk; None while incomplete."""
    end = buf.find(loadgen.HEADER_END)
    if end < 0:
        return None
    if b"\r\ntransfer-encoding: chunked" in bytes(buf[:end]).lower():
        return chunked_end(buf, end + len(loadgen.HEADER_END))
    return _BY_CONTENT_LENGTH(buf)


def answer_sizes(address: str, path: str, *, gzip: bool = False,
                 timeout_s: float = 10.0) -> dict[str, int]:
    """One ``GET path`` on ``HOST:PORT``: ``{total_bytes, head_bytes}`` of the answer as sent
    (chunk framing included); ``gzip`` asks ``Accept-Encoding: gzip`` as Prometheus does.
    Raises OSError or loadgen.LoadError."""
    extra = "Accept-Encoding: gzip\r\n" if gzip else ""
    request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n".encode("ascii")
    buf = bytearray()
    with connect_tcp(address, timeout_s) as sock:
        sock.sendall(request)
        while (total := response_length(buf)) is None:
            chunk = sock.recv(loadgen.RECV_BYTES)
            if not chunk:
                raise loadgen.LoadError("server closed the connection mid-response")
            buf += chunk
    head = buf.find(loadgen.HEADER_END) + len(loadgen.HEADER_END)
    return {"total_bytes": total, "head_bytes": head}


def main(argv: list[str] | None = None) -> int:
    """loadgen's main over TCP with chunked answers understood (see the module docstring)."""
    loadgen.connect = connect_tcp
    loadgen.response_length = response_length
    return loadgen.main(argv)


if __name__ == "__main__":
    sys.exit(main())
