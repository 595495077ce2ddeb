"""OpenAPI 3.1 document generated from the command registry.

Every command becomes one operation; its params dataclass becomes path,
query (GET/DELETE) or JSON-body (PUT/POST) parameters with the same bounds
the edge enforces.  ``x-vmagent-role``, ``x-vmagent-command`` and
``x-vmagent-mutating`` carry the registry's columns.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Iterable
from typing import Any

import agent
from agent.api.params import _unwrap_optional
from agent.api.registry import Command
from agent.errors import HTTP_STATUS

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}
_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")


def openapi_path(route: str) -> str:
    """aiohttp route to OpenAPI path: ``/v1/x/{name:[a-z]+}`` -> ``/v1/x/{name}``."""
    return _PATH_PARAM.sub(r"{\1}", route)


def _schema(hint: Any, meta: typing.Mapping[str, Any]) -> dict[str, Any]:
    base, optional = _unwrap_optional(hint)
    schema: dict[str, Any] = {"type": _JSON_TYPES.get(base, "string")}
    if optional:
        schema["type"] = [schema["type"], "null"]
    mapping = {"min": "minimum", "max": "maximum", "max_len": "maxLength",
               "pattern": "pattern", "choices": "enum"}
    for ours, theirs in mapping.items():
        if ours in meta:
            value = meta[ours]
            if ours == "pattern":  # ours are full matches; JSON Schema patterns search
                value = f"^(?:{value})$"
            schema[theirs] = list(value) if ours == "choices" else value
    return schema


def _fields(cmd: Command) -> list[tuple[dataclasses.Field[Any], dict[str, Any], bool]]:
    hints = typing.get_type_hints(cmd.params)
    out = []
    for f in dataclasses.fields(cmd.params):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out.append((f, _schema(hints[f.name], f.metadata), required))
    return out


def _operation(cmd: Command) -> dict[str, Any]:
    path_names = set(_PATH_PARAM.findall(cmd.route))
    in_body = cmd.method in ("PUT", "POST")
    params, body_props, body_required = [], {}, []
    for f, schema, required in _fields(cmd):
        if f.name in path_names:
            params.append({"name": f.name, "in": "path", "required": True, "schema": schema})
        elif in_body:
            body_props[f.name] = schema
            if required:
                body_required.append(f.name)
        else:
            params.append({"name": f.name, "in": "query", "required": required,
                           "schema": schema})
    op: dict[str, Any] = {
        "operationId": cmd.name, "summary": cmd.summary, "parameters": params,
        "x-vmagent-command": cmd.name, "x-vmagent-role": cmd.role,
        "x-vmagent-mutating": cmd.mutating, "responses": _responses(),
    }
    if in_body:
        op["requestBody"] = {"required": bool(body_required), "content": {"application/json": {
            "schema": {"type": "object", "additionalProperties": False,
                       "properties": body_props, "required": body_required}}}}
    return op


def _responses() -> dict[str, Any]:
    ok = {"description": "success envelope",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Ok"}}}}
    err = {"description": "failure envelope",
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {"200": ok, "default": err}


_COMPONENTS: dict[str, Any] = {"schemas": {
    "Ok": {"type": "object", "required": ["ok", "data", "request_id"], "properties": {
        "ok": {"const": True}, "data": {}, "request_id": {"type": "string"}}},
    "Error": {"type": "object", "required": ["ok", "error", "request_id"], "properties": {
        "ok": {"const": False}, "request_id": {"type": "string"},
        "error": {"type": "object", "required": ["code", "message", "details"], "properties": {
            "code": {"enum": sorted(HTTP_STATUS)}, "message": {"type": "string"},
            "details": {"type": "object"}}}}},
}}


def build_openapi(commands: Iterable[Command]) -> dict[str, Any]:
    """The OpenAPI 3.1 document (a JSON-able dict) for ``commands``."""
    paths: dict[str, dict[str, Any]] = {}
    for cmd in commands:
        paths.setdefault(openapi_path(cmd.route), {})[cmd.method.lower()] = _operation(cmd)
    return {
        "openapi": "3.1.0",
        "info": {"title": "vm-agent protocol", "version": agent.__version__,
                 "description": "PROTOCOL.md v1, over HTTP/1.1 on a Unix socket"},
        "servers": [{"url": "http://localhost"}],
        "paths": paths,
        "components": _COMPONENTS,
    }
