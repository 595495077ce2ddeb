"""A local stand-in for Ollama's REST API on 127.0.0.1 (random port), recording requests.

It follows the shapes of Ollama's ``docs/api.md``: ``GET /api/tags``
``{"models": [{name, model, modified_at, size, digest, details}]}``,
``GET /api/ps`` ``{"models": [{name, model, size, digest, details,
expires_at, size_vram}]}``, ``POST /api/generate`` without a prompt loads
(``done_reason: "load"``), with ``keep_alive: 0`` unloads
(``done_reason: "unload"``), an unknown model is 404 ``{"error": ...}``.
Timestamps carry a local offset, as Ollama writes them.  ``hang = True``
makes every endpoint wait (until ``stop``) far past any client timeout.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Recorded:
    method: str
    path: str
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw) if self.raw else None


@dataclass
class OllamaStandIn:
    models: dict[str, int] = field(default_factory=dict)  # name -> size in bytes
    loaded: dict[str, int] = field(default_factory=dict)  # name -> size_vram in bytes
    requests: list[Recorded] = field(default_factory=list)
    hang: bool = False
    url: str = ""
    _runner: web.AppRunner | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    def generate_bodies(self) -> list[Any]:
        return [r.json() for r in self.requests if r.path == "/api/generate"]

    async def start(self) -> str:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/api/tags", self._tags)
        app.router.add_get("/api/ps", self._ps)
        app.router.add_post("/api/generate", self._generate)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        self._release.set()  # a hanging request ends now, so cleanup does not wait for it
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(Recorded(request.method, request.path, await request.read()))
        if self.hang:
            await self._release.wait()
        result: web.StreamResponse = await handler(request)
        return result

    async def _tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [
            {"name": name, "model": name, "modified_at": "2024-05-06T10:11:12.123456789-07:00",
             "size": size, "digest": "ab" * 32,
             "details": {"format": "gguf", "family": "llama", "parameter_size": "8B",
                         "quantization_level": "Q4_0"}}
            for name, size in self.models.items()]})

    async def _ps(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [
            {"name": name, "model": name, "size": self.models[name], "digest": "cd" * 32,
             "details": {"format": "gguf", "family": "llama"},
             "expires_at": "2024-06-04T14:38:31.83753-07:00", "size_vram": vram}
            for name, vram in self.loaded.items()]})

    async def _generate(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        name = body["model"]
        if name not in self.models:
            return web.json_response({"error": f"model '{name}' not found"}, status=404)
        unload = body.get("keep_alive") == 0 and not isinstance(body.get("keep_alive"), bool)
        if unload:
            self.loaded.pop(name, None)
        else:
            self.loaded[name] = 0
        return web.json_response({"model": name, "created_at": "2024-09-12T03:54:03.516566Z",
                                  "response": "", "done": True,
                                  "done_reason": "unload" if unload else "load"})
