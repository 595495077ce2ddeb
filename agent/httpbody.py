"""Reading an upstream's HTTP answer with a size cap (Ollama, Prometheus).

An answer is read into memory to be decoded; one that is larger than its
cap (declared by ``Content-Length`` or found while reading) is refused
without reading the rest, so a broken or hostile upstream cannot grow the
agent's memory.
"""

from __future__ import annotations

import aiohttp


class TooLarge(Exception):
    """The answer is over the cap; ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"answer larger than {limit} bytes")
        self.limit = limit


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body of ``resp``, at most ``limit`` bytes.

    Raises TooLarge when ``Content-Length`` says more (nothing read) or the
    body grows past ``limit`` (the rest not read); aiohttp's errors pass through.
    """
    if (resp.content_length or 0) > limit:
        raise TooLarge(limit)
    body = bytearray()
    async for chunk in resp.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise TooLarge(limit)
    return bytes(body)
