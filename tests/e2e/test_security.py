"""``systemd-analyze security --offline=true`` inside the booted container.

scripts/check-units.sh checks the same on the host; here it runs on the
unit ``make install`` put in /etc/systemd/system, with the container's own
systemd 252.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.box import SRC, SystemdBox

pytestmark = pytest.mark.e2e

MAX_EXPOSURE = 4.0
_OVERALL = re.compile(r"Overall exposure level for vm-agent\.service: ([0-9.]+) (\S+)")


@pytest.mark.parametrize("unit", ["/etc/systemd/system/vm-agent.service",
                                  f"{SRC}/systemd/vm-agent.service"])
def test_exposure_at_most_4(box: SystemdBox, unit: str) -> None:
    done = box.run(["systemd-analyze", "security", "--offline=true", "--no-pager", unit],
                   check=False, timeout_s=60)
    match = _OVERALL.search(done.out)
    assert match, repr(done)
    exposure, verdict = float(match.group(1)), match.group(2)
    assert exposure <= MAX_EXPOSURE, done.out
    assert verdict == "OK", done.out
