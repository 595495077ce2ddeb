"""``vm-agentctl``'s commands as protocol requests (PROTOCOL.md): method, path, body.

Names from the command line are percent-encoded into the path, so ``logs ../x`` asks for
the container ``../x`` (which the agent refuses), never another route.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.parse
from typing import Any


def route(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    """``(method, path with query, JSON body or None)`` of a parsed ``vm-agentctl`` command."""
    if args.cmd == "health":
        return "GET", "/v1/health", None
    if args.cmd == "version":
        return "GET", "/v1/version", None
    if args.cmd == "hold":
        if args.reason:
            return "PUT", "/v1/hold", {"reason": " ".join(args.reason)}
        return "GET", "/v1/hold", None
    if args.cmd == "unhold":
        return "DELETE", "/v1/hold", None
    if args.cmd == "io":
        return "GET", "/v1/io", None
    if args.cmd == "score":
        return "GET", "/v1/score", None
    if args.cmd == "trend":
        return "GET", f"/v1/metrics/trend/{args.kind}?range={args.range}", None
    if args.cmd in ("run", "jobs", "runs"):
        return _job_route(args)
    if args.cmd in ("containers", "logs", "restart", "restart-unhealthy"):
        return _container_route(args)
    if args.cmd == "ollama":
        return _ollama_route(args)
    raise AssertionError(args.cmd)


def _job_route(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    """``run``/``jobs``/``runs``: the job runner's routes (PROTOCOL.md)."""
    if args.cmd == "jobs":
        return "GET", "/v1/jobs", None
    job = urllib.parse.quote(args.job, safe="")
    if args.cmd == "runs":
        return "GET", f"/v1/jobs/{job}/runs?limit={args.limit}", None
    body: dict[str, Any] = {"dry_run": args.dry_run, "wait": not args.no_wait,
                            "trigger": args.trigger or _trigger()}
    if args.mode:
        body["mode"] = args.mode
    return "POST", f"/v1/jobs/{job}/run", body


def _container_route(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    """``containers``/``logs``/``restart``/``restart-unhealthy`` (PROTOCOL.md)."""
    if args.cmd == "containers":
        query = {"filter": args.filter, **({"stack": args.stack} if args.stack else {})}
        return "GET", "/v1/containers?" + urllib.parse.urlencode(query), None
    if args.cmd == "restart-unhealthy":
        return "POST", "/v1/containers/restart-unhealthy", None
    name = urllib.parse.quote(args.name, safe="")
    if args.cmd == "logs":
        return "GET", f"/v1/containers/{name}/logs?tail={args.tail}", None
    return "POST", f"/v1/containers/{name}/restart", None


def _ollama_route(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    """``ollama models|loaded|impact M|load M [--force]|unload M`` (PROTOCOL.md)."""
    sub = args.ollama_cmd
    if sub in ("models", "loaded"):
        return "GET", f"/v1/ollama/{sub}", None
    if sub == "impact":
        query = urllib.parse.urlencode({"model": args.model})
        return "GET", f"/v1/ollama/load-impact?{query}", None
    if sub == "load":
        return "POST", "/v1/ollama/load", {"model": args.model, "force": args.force}
    return "POST", "/v1/ollama/unload", {"model": args.model}


def _trigger() -> str:
    """``timer`` when started by systemd (a unit's ``INVOCATION_ID``, no terminal), else ``cli``."""
    return "timer" if os.environ.get("INVOCATION_ID") and not sys.stdin.isatty() else "cli"
