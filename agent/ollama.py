"""Ollama: an HTTP client for its REST API and the pure load-impact arithmetic.

API (Ollama ``docs/api.md``): ``GET /api/tags`` lists local models
``{"models": [{"name", "model", "modified_at", "size", "digest", ...}]}``;
``GET /api/ps`` lists loaded ones ``{"models": [{"name", "size",
"size_vram", "expires_at", ...}]}``; ``POST /api/generate`` with a model and
no prompt loads it ("If an empty prompt is provided, the model will be loaded
into memory"), and with ``"keep_alive": 0`` unloads it (answer
``{"done": true, "done_reason": "unload"}``).  Sizes are bytes.

Errors: a refused or reset connection raises
``UpstreamUnavailable("ollama")`` (503), no answer within the timeout
``UpstreamTimeout("ollama")`` (504), Ollama's own 404 (JSON with an
``error``, e.g. "model 'x' not found") ``NotFound``; any other non-2xx or
non-JSON answer (a 404 page of an Ollama too old for the endpoint, or of a
proxy) is ``UpstreamUnavailable`` with the status, and so is an answer over
MAX_ANSWER_BYTES (not read further).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp

from agent.errors import BadRequest, NotFound, UpstreamTimeout, UpstreamUnavailable
from agent.httpbody import TooLarge, read_capped

UPSTREAM: Final = "ollama"

# Ollama's model-name grammar (ollama/ollama types/model/name.go, ``ParseName``):
# [host "/"] [namespace "/"] model [":" tag]; host {alnum|_}{alnum|_-.:}* (1-350),
# namespace {alnum|_}{alnum|-_}* (1-80), model and tag {alnum|_}{alnum|-_.}* (1-80).
# Digests ("@sha256-...") are not accepted here.  Ollama compares names case-insensitively.
_HOST = r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}"
_NAMESPACE = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}"
_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"
MODEL_NAME_PATTERN: Final = rf"(?:(?:{_HOST}/)?{_NAMESPACE}/)?{_PART}(?::{_PART})?"
MODEL_NAME_HINT: Final = ("be an Ollama model name: [host/][namespace/]model[:tag] of letters, "
                          "digits, '_', '-', '.'")
#: ``MaxNameLength`` in name.go: 350 + 1 + 80 + 1 + 80 + 1 + 80.
MODEL_NAME_MAX_LEN: Final = 593
#: The largest answer read from Ollama (``/api/tags`` of ~60,000 models); more is refused.
MAX_ANSWER_BYTES: Final = 16 * 1024 * 1024


def check_model_name(name: str, field: str = "model") -> str:
    """``name`` unchanged when it matches :data:`MODEL_NAME_PATTERN`; else raises BadRequest."""
    if len(name) > MODEL_NAME_MAX_LEN or not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise BadRequest(field, f"{field} must {MODEL_NAME_HINT}, got {name[:64]!r}")
    return name


def canonical(name: str) -> str:
    """``llama3`` -> ``llama3:latest`` (Ollama's default tag), lower-cased for comparison."""
    last = name.rsplit("/", 1)[-1]
    return (name if ":" in last else f"{name}:latest").lower()


def find_model(models: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The entry of ``models`` (``/api/tags`` or ``/api/ps``) whose name is ``name``, or None."""
    want = canonical(name)
    return next((m for m in models if canonical(str(m.get("name", ""))) == want), None)


def utc_rfc3339(stamp: str | None) -> str | None:
    """Ollama's local-offset timestamp as UTC RFC 3339 (``...Z``, whole seconds); None stays,
    and so does a stamp that does not parse or falls outside datetime's years 1-9999."""
    if not stamp:
        return None
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except OverflowError:  # e.g. year 9999 with a negative offset: past datetime's range
        return None


@dataclass(frozen=True)
class Impact:
    """What loading a model would leave: bytes, a level and a sentence."""

    model: str
    size_bytes: int
    available_bytes: int
    predicted_free_bytes: int
    level: str
    warning: str
    already_loaded: bool

    def to_wire(self) -> dict[str, Any]:
        """``{model, size_bytes, available_bytes, predicted_free_bytes, level, warning,
        already_loaded}``."""
        return dict(self.__dict__)


def gb(n: float) -> str:
    """Decimal gigabytes with one decimal: ``7.8 GB``."""
    return f"{n / 1e9:.1f} GB"


def impact(model: str, size_bytes: int, available_bytes: int, *, warn_free_bytes: int,
           floor_bytes: int, already_loaded: bool = False) -> Impact:
    """Predicted free RAM after loading ``model``.

    predicted_free = MemAvailable - size (the model file's size from
    ``/api/tags``: a lower bound of what a CPU load takes, the context's KV
    cache comes on top).  A model already loaded costs nothing more.  Level:
    CRIT under ``floor_bytes`` (a load is refused), WARN under
    ``warn_free_bytes``, else OK.
    """
    cost = 0 if already_loaded else size_bytes
    free = available_bytes - cost
    level = "CRIT" if free < floor_bytes else "WARN" if free < warn_free_bytes else "OK"
    return Impact(model, size_bytes, available_bytes, free, level,
                  _warning(model, size_bytes, free, level, already_loaded=already_loaded),
                  already_loaded)


def _warning(model: str, size: int, free: int, level: str, *, already_loaded: bool) -> str:
    if already_loaded:
        return f"{model} is already loaded; ~{gb(max(free, 0))} free"
    tail = {"CRIT": "; swap pressure likely", "WARN": "; memory will be tight", "OK": ""}[level]
    return f"Loading {model} ({gb(size)}) will leave ~{gb(max(free, 0))} free{tail}"


class OllamaClient:
    """Ollama's REST API at ``url``; every call bounded by ``timeout_s`` (loads by
    ``load_timeout_s``).  A session per call: calls are rare (dashboard, CLI)."""

    def __init__(self, url: str, timeout_s: float, load_timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.load_timeout_s = load_timeout_s

    async def tags(self) -> list[dict[str, Any]]:
        """``/api/tags`` models: ``[{name, size, modified_at, ...}]``."""
        return _models(await self._call("GET", "/api/tags", None, self.timeout_s))

    async def ps(self) -> list[dict[str, Any]]:
        """``/api/ps`` models: ``[{name, size, size_vram, expires_at, ...}]``."""
        return _models(await self._call("GET", "/api/ps", None, self.timeout_s))

    async def load(self, model: str) -> dict[str, Any]:
        """Load ``model`` (``/api/generate`` without a prompt); Ollama's answer."""
        body = {"model": model, "stream": False}
        return await self._call("POST", "/api/generate", body, self.load_timeout_s)

    async def unload(self, model: str) -> dict[str, Any]:
        """Unload ``model`` (``/api/generate``, ``keep_alive`` the number 0); Ollama's answer."""
        body = {"model": model, "keep_alive": 0}
        return await self._call("POST", "/api/generate", body, self.timeout_s)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None,
                    timeout_s: float) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, 5.0))
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, \
                    session.request(method, self.url + path, json=body) as resp:
                return await _answer(resp, path)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout(UPSTREAM, f"Ollama did not answer {path} within "
                                  f"{timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(UPSTREAM, f"Ollama at {self.url} is unreachable: "
                                      f"{_reason(exc)}") from None


async def _answer(resp: aiohttp.ClientResponse, path: str) -> dict[str, Any]:
    text = await _read_capped(resp, path)
    payload = _decode(text)
    if resp.status == 404 and payload is not None and "error" in payload:
        raise NotFound(f"Ollama: {_error_text(payload, text)}")
    if resp.status >= 300 or payload is None:
        raise UpstreamUnavailable(UPSTREAM, f"Ollama answered {path} with HTTP {resp.status}: "
                                  f"{_error_text(payload, text)}", status=resp.status)
    return payload


async def _read_capped(resp: aiohttp.ClientResponse, path: str) -> str:
    """The body as text (UTF-8, as Ollama writes JSON); UpstreamUnavailable past
    MAX_ANSWER_BYTES, without reading the rest."""
    try:
        body = await read_capped(resp, MAX_ANSWER_BYTES)
    except TooLarge:
        raise UpstreamUnavailable(UPSTREAM, f"Ollama's answer to {path} is larger than "
                                  f"{MAX_ANSWER_BYTES} bytes", status=resp.status) from None
    return body.decode("utf-8", "replace")


def _decode(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _error_text(payload: dict[str, Any] | None, text: str) -> str:
    message = payload.get("error") if payload else None
    return str(message or text or "no body")[:300]


def _reason(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.strerror or str(exc.os_error)
    return type(exc).__name__


def _models(payload: dict[str, Any]) -> list[dict[str, Any]]:
    models = payload.get("models")
    if not isinstance(models, list):
        raise UpstreamUnavailable(UPSTREAM, "Ollama's answer has no 'models' list")
    return [m for m in models if isinstance(m, dict)]

