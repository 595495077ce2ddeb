"""The maintenance hold: while active, every destructive job action is refused (423).

Kept in ``<state_dir>/hold.json`` so it survives restarts; written atomically
(temporary file, fsync, rename) so a crash never leaves half a file.  A hold
file that cannot be parsed counts as an *active* hold: when in doubt, the
agent does not delete or restart anything.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.errors import Locked

log = logging.getLogger("vm-agent")


def utc_now() -> str:
    """Now as RFC 3339 UTC with seconds: ``2026-11-29T20:00:00Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Hold:
    """``since`` is RFC 3339 UTC; ``by`` describes the peer that set it."""

    active: bool
    reason: str | None = None
    since: str | None = None
    by: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


class HoldStore:
    """Reads and writes the hold file under ``state_dir``."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.path = Path(state_dir) / "hold.json"

    def get(self) -> Hold:
        """The current hold; an unreadable file is reported as an active hold."""
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return Hold(active=False)
        except (OSError, ValueError) as exc:
            log.error("hold file %s unreadable (%s): treating the hold as active", self.path, exc)
            return Hold(active=True, reason=f"hold file unreadable: {exc}")
        return Hold(active=True, reason=raw.get("reason"), since=raw.get("since"),
                    by=raw.get("by"))

    def set(self, reason: str, by: str) -> Hold:
        """Activate the hold, or replace one (``since`` and ``by`` become the new setter's)."""
        since = utc_now()
        hold = Hold(active=True, reason=reason, since=since, by=by)
        self._write({"reason": reason, "since": since, "by": by})
        return hold

    def clear(self) -> Hold:
        """Lift the hold (idempotent); returns the hold as it was."""
        previous = self.get()
        self.path.unlink(missing_ok=True)
        return previous

    def check(self, action: str) -> None:
        """Raise Locked when a hold is active; ``action`` names what was refused."""
        hold = self.get()
        if hold.active:
            raise Locked(f"maintenance hold active ({hold.reason}); {action} refused",
                         {"hold": hold.to_wire()})

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".hold.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
