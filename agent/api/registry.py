"""The allow-list: one literal table of every command the agent answers.

A request that matches no row is refused (404, or 405 for a known route with
another method) before its body is read.  Each row names the handler
directly; nothing is ever looked up by a client-supplied string.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, NamedTuple, TypeVar

from agent.api.access import Peer, Role
from agent.api.params import NoParams

P = TypeVar("P")


class Call(NamedTuple, Generic[P]):
    """What a handler gets: the services, who asked, and the validated params (immutable)."""

    services: Any  # agent.api.services.Services (Any keeps the protocol layer domain-free)
    peer: Peer
    role: Role
    request_id: str
    params: P


Handler = Callable[[Call[Any]], Awaitable[Any]]


class RawJSON(str):
    """A handler's reply that is already encoded JSON; the envelope splices it in as is."""


@dataclass(frozen=True)
class Command:
    """One allowed command.

    ``name`` is the audit name (``VMAGENT_COMMAND``); ``route`` an aiohttp
    pattern; ``role`` the least role that may run it; ``params`` the frozen
    dataclass of its path, query and body parameters; ``mutating`` whether it
    changes anything (audited at a higher priority, listed in the OpenAPI).
    """

    name: str
    method: Literal["GET", "PUT", "POST", "DELETE"]
    route: str
    role: Literal["viewer", "operator"]
    params: type
    mutating: bool
    summary: str
    handler: Handler


def command(name: str, method: Literal["GET", "PUT", "POST", "DELETE"], route: str,
            role: Literal["viewer", "operator"], handler: Handler, summary: str, *,
            params: type = NoParams, mutating: bool = False) -> Command:
    """A registry row (keyword-friendly constructor)."""
    return Command(name, method, route, role, params, mutating, summary, handler)
