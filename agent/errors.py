"""One error family for the whole agent.

Every failure a client can see is an :class:`AgentError` with a stable
``code`` from PROTOCOL.md; the protocol layer turns it into the envelope and
HTTP status in one place (``agent.api.server``).  Anything else that escapes a
handler is reported as ``internal`` and its traceback goes to the journal only.
"""

from __future__ import annotations

from typing import Any, Final

#: PROTOCOL.md error code -> HTTP status.
HTTP_STATUS: Final[dict[str, int]] = {
    "bad_request": 400,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "payload_too_large": 413,
    "locked": 423,
    "rate_limited": 429,
    "internal": 500,
    "upstream_unavailable": 503,
    "timeout": 504,
}


class AgentError(Exception):
    """A failure with a PROTOCOL.md code, a human message and JSON details.

    ``details`` must be JSON-serialisable; it names the offending field for
    ``bad_request`` (``{"field": "tail"}``) and the upstream for
    ``upstream_unavailable`` (``{"upstream": "docker"}``).
    """

    code: str = "internal"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    @property
    def http_status(self) -> int:
        """The HTTP status PROTOCOL.md gives this code."""
        return HTTP_STATUS[self.code]

    def to_wire(self) -> dict[str, Any]:
        """``{"code", "message", "details"}`` as it goes into the envelope."""
        return {"code": self.code, "message": self.message, "details": self.details}


class BadRequest(AgentError):
    code = "bad_request"

    def __init__(self, field: str, message: str, **details: Any) -> None:
        super().__init__(message, {"field": field, **details})


class Forbidden(AgentError):
    code = "forbidden"


class NotFound(AgentError):
    code = "not_found"


class MethodNotAllowed(AgentError):
    code = "method_not_allowed"


class Conflict(AgentError):
    code = "conflict"


class PayloadTooLarge(AgentError):
    code = "payload_too_large"


class Locked(AgentError):
    code = "locked"


class RateLimited(AgentError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: float, **details: Any) -> None:
        super().__init__(message, {"retry_after_s": round(retry_after_s, 3), **details})


class UpstreamUnavailable(AgentError):
    code = "upstream_unavailable"

    def __init__(self, upstream: str, message: str, **details: Any) -> None:
        super().__init__(message, {"upstream": upstream, **details})


class UpstreamTimeout(UpstreamUnavailable):
    """The upstream did not answer in time (504).  A kind of UpstreamUnavailable, so
    code that handles "the upstream is down" also handles "it hangs"."""

    code = "timeout"


class Internal(AgentError):
    code = "internal"


class ConfigError(Exception):
    """Configuration that cannot be used; ``key`` is the dotted key path.

    The daemon exits with status 78 (EX_CONFIG, ``sysexits.h``) on it.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message
