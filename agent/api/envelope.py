"""The wire side of a request: the envelope, the body within its limits, the raw parameters.

Success: ``{"ok": true, "data": ..., "request_id": "..."}``; failure:
``{"ok": false, "error": {"code", "message", "details"}, "request_id": "..."}``
(PROTOCOL.md "Envelope"), always ``application/json; charset=utf-8`` with
``Server: vm-agent``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, Final

import aiohttp
from aiohttp import web
from aiohttp.http import HttpVersion11
from multidict import CIMultiDict, CIMultiDictProxy

from agent.api.registry import RawJSON
from agent.errors import AgentError, BadRequest, MethodNotAllowed, NotFound, PayloadTooLarge

MAX_BODY_BYTES: Final = 64 * 1024  # PROTOCOL.md: request bodies are at most 64 KiB
#: Every reply's headers besides Content-Length and Date (the order aiohttp keeps).
_HEADERS: Final = CIMultiDictProxy(CIMultiDict(
    {"Server": "vm-agent", "Content-Type": "application/json; charset=utf-8"}))
_NO_KEYS: Final = frozenset[str]()


class ClientGone(Exception):
    """The client closed the connection before its request was complete."""


def envelope_ok(data: Any, request_id: str) -> web.Response:
    """The 200 envelope of ``data``; a :class:`RawJSON` reply is spliced in as it is.

    Raises ValueError when ``data`` holds a float that is NaN or infinite.
    """
    if isinstance(data, RawJSON):  # pre-encoded: splice it in rather than encode it again
        body = f'{{"ok":true,"data":{data},"request_id":{json.dumps(request_id)}}}'
        return web.Response(body=body.encode(), headers=_HEADERS)
    return _json(200, {"ok": True, "data": data, "request_id": request_id})


def envelope_error(err: AgentError, request_id: str) -> web.Response:
    """The error envelope with ``err``'s HTTP status (405 carries ``Allow``)."""
    resp = _json(err.http_status, {"ok": False, "error": err.to_wire(),
                                   "request_id": request_id})
    if isinstance(err, MethodNotAllowed):
        resp.headers["Allow"] = ", ".join(err.details.get("allowed", ()))
    return resp


def _json(status: int, payload: dict[str, Any]) -> web.Response:
    # NaN and Infinity are not JSON (RFC 8259): such a value is a ValueError, which the
    # server answers as ``internal`` with the traceback in the journal, never invalid JSON
    body = json.dumps(payload, separators=(",", ":"), default=str, allow_nan=False)
    return web.Response(status=status, body=body.encode(), headers=_HEADERS)


def http_error(exc: web.HTTPException, request: web.BaseRequest) -> AgentError:
    """The protocol error for aiohttp's routing answer (404, 405 with the allowed methods)."""
    if exc.status == 405:
        return MethodNotAllowed(f"{request.method} is not allowed on {request.path}",
                                {"allowed": sorted(getattr(exc, "allowed_methods", ()))})
    if exc.status == 404:
        return NotFound(f"no command {request.method} {request.path}")
    if exc.status == 413:
        return _too_large()
    return BadRequest("request", exc.reason or "bad request")


def _too_large() -> PayloadTooLarge:
    return PayloadTooLarge(f"request body over {MAX_BODY_BYTES} bytes",
                           {"limit_bytes": MAX_BODY_BYTES})


async def request_params(request: web.BaseRequest, match: Mapping[str, str],
                         timeout_s: float) -> tuple[dict[str, Any], frozenset[str]]:
    """The raw parameters (path, query, JSON body) and the names that came as strings.

    Raises BadRequest (a name given twice, malformed JSON, a body received
    too slowly), PayloadTooLarge, :class:`ClientGone`.
    """
    if not match and not request.query_string and not request.body_exists:
        return {}, _NO_KEYS  # the common GET: nothing to read or merge
    body = await _read_body(request, timeout_s)
    query: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        if len(values) > 1:
            raise BadRequest(key, f"{key} given more than once")
        if key in match:
            raise BadRequest(key, f"{key} is part of the path; it cannot be given again")
        query[key] = values[0]
    raw: dict[str, Any] = {**match, **query}
    for key, value in body.items():
        if key in raw:
            raise BadRequest(key, f"{key} given in both the body and the URL")
        raw[key] = value
    return raw, frozenset(query) | frozenset(match)


async def _read_body(request: web.BaseRequest, timeout_s: float) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _too_large()
    try:
        async with asyncio.timeout(timeout_s):
            await _expect(request)
            raw = await request.read()
    except TimeoutError:
        raise BadRequest("body", f"request body not received within {timeout_s} s") from None
    except (ConnectionError, aiohttp.ClientConnectionResetError) as exc:
        raise ClientGone(str(exc)) from None
    except web.HTTPRequestEntityTooLarge:
        raise _too_large() from None
    return _parse_body(raw)


async def _expect(request: web.BaseRequest) -> None:
    """``Expect: 100-continue`` (curl sends it with larger bodies): tell the client to go on."""
    expect = request.headers.get("Expect")
    if expect is None:
        return
    if request.version != HttpVersion11 or expect.lower() != "100-continue":
        raise BadRequest("Expect", f"unsupported Expect: {expect[:64]!r}")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the reply's own size starts after this line


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise BadRequest(key[:64], f"{key[:64]!r} appears twice in the JSON body")
        seen[key] = value
    return seen


def _reject_constant(name: str) -> Any:
    """Python's json reads NaN, Infinity and -Infinity, which are not JSON (RFC 8259)."""
    raise ValueError(f"{name} is not a JSON value")


def _parse_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, object_pairs_hook=_reject_duplicates,
                          parse_constant=_reject_constant)
    except BadRequest:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("body", f"malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("body", "the body must be a JSON object")
    return body
