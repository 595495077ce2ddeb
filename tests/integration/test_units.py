"""The shipped systemd units and install script, checked with the real tools.

``systemd-analyze verify`` and ``systemd-analyze security --offline=true`` run
on the files in ``systemd/`` (no systemd as PID 1 needed); deliberately broken
copies show the check can fail. ``scripts/install.sh`` runs for real as root
inside a private mount namespace (``unshare --mount``) whose ``/etc`` and
``/usr/local/bin`` are temp copies, so the host is never changed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
CHECK = ROOT / "scripts" / "check-units.sh"
INSTALL = ROOT / "scripts" / "install.sh"
# Achieved 2.2 with the shipped service; issue 7 asks for <= 4.0. A later job
# that widens the sandbox (e.g. CAP_SETUID for git as a repo owner) must still
# stay under this bound, or raise it here with its reason.
MAX_EXPOSURE = 3.0
EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def directives(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every directive of a unit file, in order.

    Comments (``#``, ``;``) and blank lines are skipped; repeated keys (such as
    ``ReadWritePaths=``) each give an entry. See ``man 5 systemd.syntax``.
    """
    section, out = "", []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def values(path: Path, section: str, key: str) -> list[str]:
    """Every value given to ``key`` in ``section`` of the unit at ``path``."""
    return [v for s, k, v in directives(path) if (s, k) == (section, key)]


def run_check(unit_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """scripts/check-units.sh on ``unit_dir``; stdout and stderr merged."""
    return subprocess.run(
        [str(CHECK), str(unit_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def broken_copy(tmp_path: Path, unit: str, old: str, new: str) -> Path:
    """A copy of systemd/ with ``old`` replaced by ``new`` once in ``unit``."""
    dst = tmp_path / "units"
    shutil.copytree(UNITS, dst)
    text = (dst / unit).read_text()
    assert old in text, f"{old!r} not in {unit}"
    (dst / unit).write_text(text.replace(old, new, 1))
    return dst


def test_shipped_units_pass_check() -> None:
    result = run_check(UNITS)
    assert result.returncode == 0, result.stdout
    assert "verify: ok" in result.stdout


@pytest.mark.parametrize(
    ("unit", "old", "new", "expect"),
    [
        ("vm-agent.service", "WatchdogSec=30", "WatchdogSecs=30", "Unknown key"),
        ("vm-agent.service", "Type=notify", "Type=notifyy", "Failed to parse service type"),
        ("vm-agent.socket", "Accept=no", "Accept=maybe", "Failed to parse"),
        (
            "vm-agent.service",
            "Requires=vm-agent.socket",
            "Requires=vm-agent.sockett",
            "vm-agent.sockett",
        ),
    ],
)
def test_broken_unit_fails_check(
    tmp_path: Path, unit: str, old: str, new: str, expect: str
) -> None:
    result = run_check(broken_copy(tmp_path, unit, old, new))
    assert result.returncode == 1, result.stdout
    assert "verify: FAILED" in result.stdout
    assert expect in result.stdout


def test_socket_has_issue_2_settings() -> None:
    sock = UNITS / "vm-agent.socket"
    expected = {
        "ListenStream": ["/run/vm-agent/agent.sock"],
        "Accept": ["no"],
        "SocketMode": ["0660"],
        "SocketUser": ["root"],
        "SocketGroup": ["vm-agent"],
        "DirectoryMode": ["0750"],
    }
    assert {k: values(sock, "Socket", k) for k in expected} == expected
    assert values(sock, "Install", "WantedBy") == ["sockets.target"]


def test_service_is_notify_with_watchdog_and_no_runtime_directory() -> None:
    svc = UNITS / "vm-agent.service"
    assert not [d for d in directives(svc) if d[1].startswith("RuntimeDirectory")]
    assert values(svc, "Service", "Type") == ["notify"]
    assert values(svc, "Service", "NotifyAccess") == ["main"]
    assert values(svc, "Service", "WatchdogSec") == ["30"]
    assert values(svc, "Service", "Restart") == ["on-failure"]
    assert values(svc, "Unit", "Requires") == ["vm-agent.socket"]


def test_service_orders_after_docker_without_pulling_it_in() -> None:
    svc = UNITS / "vm-agent.service"
    assert "docker.service" in " ".join(values(svc, "Unit", "After"))
    pulls = values(svc, "Unit", "Wants") + values(svc, "Unit", "Requires")
    assert not [v for v in pulls if "docker" in v]


def test_service_writes_only_listed_paths() -> None:
    svc = UNITS / "vm-agent.service"
    assert values(svc, "Service", "ProtectSystem") == ["strict"]
    paths = " ".join(values(svc, "Service", "ReadWritePaths")).split()
    assert [p.lstrip("-") for p in paths] == [
        "/run/vm-agent",
        "/var/log/journal",
        "/run/log/journal",
        "/var/cache/apt",
        "/var/lib/apt/lists",
        "/var/lib/prometheus/node-exporter",  # metrics.textfile (agent/metrics_export.py)
    ]
    assert values(svc, "Service", "StateDirectory") == ["vm-agent"]


def exposure_of(unit: Path) -> float:
    """Overall exposure (0-10) that ``systemd-analyze security --offline=true`` prints."""
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    match = EXPOSURE.search(out)
    assert match, out
    return float(match.group(1))


def test_security_exposure_within_bound() -> None:
    assert exposure_of(UNITS / "vm-agent.service") <= MAX_EXPOSURE


def test_check_fails_when_hardening_is_removed(tmp_path: Path) -> None:
    dst = tmp_path / "units"
    shutil.copytree(UNITS, dst)
    svc = dst / "vm-agent.service"
    loose = [
        ln
        for ln in svc.read_text().splitlines()
        if not ln.startswith(
            (
                "CapabilityBoundingSet=",
                "SystemCallFilter=",
                "PrivateDevices=",
                "RestrictAddressFamilies=",
            )
        )
    ]
    svc.write_text("\n".join(loose) + "\n")
    assert exposure_of(svc) > MAX_EXPOSURE
    result = run_check(dst, MAX_EXPOSURE=str(MAX_EXPOSURE))
    assert result.returncode == 1, result.stdout
    assert "is above" in result.stdout


# Runs as root in a private mount namespace: /etc and /usr/local/bin are temp
# copies, /run/systemd is hidden (so install.sh never calls systemctl on a host
# that runs systemd), PREFIX is a temp dir. Run twice: the second run must keep
# the host's edited config and the existing groups.
NAMESPACE_SCRIPT = r"""
set -eu
cp -a /etc "$WORK/etc"
mount --bind "$WORK/etc" /etc
mkdir "$WORK/bin"
mount --bind "$WORK/bin" /usr/local/bin
if [ -d /run/systemd ]; then mount -t tmpfs tmpfs /run/systemd; fi
"$SRC/scripts/install.sh" "$WORK/prefix" >"$WORK/run1.log" 2>&1
echo "# edited on this host" >>/etc/vm-agent/vm-agent.yaml
"$SRC/scripts/install.sh" "$WORK/prefix" >"$WORK/run2.log" 2>&1
"""


def checkout_copy(dst: Path) -> Path:
    """This checkout without its venv, git data and caches, at ``dst``."""
    shutil.copytree(
        ROOT,
        dst,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", ".run", "*_cache", "build", "*.egg-info", "__pycache__"
        ),
    )
    return dst


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The work dir of two install.sh runs in a private mount namespace."""
    work = tmp_path_factory.mktemp("install")
    env = {
        **os.environ,
        "WORK": str(work),
        "SRC": str(checkout_copy(work / "src")),
        "PIP_CACHE_DIR": str(work / "pip-cache"),
    }
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", NAMESPACE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    logs = "".join(p.read_text() for p in sorted(work.glob("run*.log")))
    assert result.returncode == 0, result.stderr + logs
    return work


def test_install_creates_system_groups_once(installed: Path) -> None:
    groups = {
        ln.split(":")[0]: int(ln.split(":")[2])
        for ln in (installed / "etc" / "group").read_text().splitlines()
    }
    assert groups["vm-agent"] < 1000 and groups["vm-agent-ops"] < 1000
    second = (installed / "run2.log").read_text()
    assert "group vm-agent exists" in second and "group vm-agent-ops exists" in second


def test_install_keeps_a_hosts_config(installed: Path) -> None:
    conf = installed / "etc" / "vm-agent"
    assert conf.joinpath("vm-agent.yaml").read_text().endswith("# edited on this host\n")
    shipped = (ROOT / "etc" / "vm-agent.yaml").read_text()
    assert conf.joinpath("vm-agent.yaml.dist").read_text() == shipped
    assert conf.joinpath("conf.d").is_dir()
    assert "kept /etc/vm-agent/vm-agent.yaml" in (installed / "run2.log").read_text()


def test_install_builds_venv_and_links_commands(installed: Path) -> None:
    prefix = installed / "prefix"
    for cmd in ("vm-agent", "vm-agentctl"):
        assert os.readlink(installed / "bin" / cmd) == f"{prefix}/bin/{cmd}"
        first = (prefix / "bin" / cmd).read_text().splitlines()[0]
        assert first == f"#!{prefix}/bin/python"
    subprocess.run([prefix / "bin" / "python", "-c", "import agent"], check=True, timeout=60)


def test_install_rewrites_and_verifies_units(installed: Path) -> None:
    unit_dir = installed / "etc" / "systemd" / "system"
    svc = unit_dir / "vm-agent.service"
    assert values(svc, "Service", "ExecStart") == [
        "/usr/local/bin/vm-agent serve --config /etc/vm-agent/vm-agent.yaml"
    ]
    doc = f"file:{installed}/prefix/share/doc/vm-agent/OPERATIONS.md"
    assert values(svc, "Unit", "Documentation") == [doc]
    assert (unit_dir / "vm-agent.socket").read_text().count(doc) == 1
    assert Path(doc.removeprefix("file:")).read_text() == (ROOT / "docs/OPERATIONS.md").read_text()
    for log in ("run1.log", "run2.log"):
        text = (installed / log).read_text()
        assert "systemd-analyze verify: ok" in text
        assert "systemctl enable --now vm-agent.socket\n" in text
