"""The installed console scripts of this checkout, for tests that run the real processes."""

from __future__ import annotations

import sys
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
AGENT = str(VENV_BIN / "vm-agent")
CTL = str(VENV_BIN / "vm-agentctl")
