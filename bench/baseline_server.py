"""The baseline: the smallest aiohttp server that answers a fixed ~1 KB JSON.

``python -m bench.baseline_server --socket PATH`` serves ``GET /v1/health``
with :data:`BODY` (1024 bytes, built once) on a Unix socket, with aiohttp's
defaults and no access log, until SIGTERM/SIGINT.  It is what vm-agent's
``GET /v1/health`` is compared with: same framework, same event loop, no
routing table, access check, audit or envelope.
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web

BODY_BYTES = 1024


def _body(size: int) -> bytes:
    """A JSON object shaped like a host sample, padded to exactly ``size`` bytes."""
    sample = {"ok": True, "data": {"status": "OK", "cpu": {"cores": 2, "steal_percent": 0.0},
                                   "memory": {"total_bytes": 25276510208}, "pad": ""},
              "request_id": "0123456789abcdef"}
    base = len(json.dumps(sample, separators=(",", ":")))
    sample["data"]["pad"] = "x" * (size - base)  # type: ignore[index]
    return json.dumps(sample, separators=(",", ":")).encode()


BODY = _body(BODY_BYTES)


async def health(request: web.Request) -> web.Response:
    """The fixed body, ``application/json``."""
    return web.Response(body=BODY, content_type="application/json")


def main() -> None:
    """Serve until SIGTERM/SIGINT (aiohttp's run_app handles both)."""
    p = argparse.ArgumentParser(prog="baseline_server", description=__doc__.splitlines()[0])
    p.add_argument("--socket", required=True, help="Unix socket path to bind")
    args = p.parse_args()
    app = web.Application()
    app.router.add_get("/v1/health", health)
    web.run_app(app, path=args.socket, access_log=None, print=None)


if __name__ == "__main__":
    main()
