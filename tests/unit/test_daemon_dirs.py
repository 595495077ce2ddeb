"""A state_dir or run_dir that cannot be a folder stops ``vm-agent serve`` with exit 78
(RestartPreventExitStatus: no restart loop) and a message naming the key, before it
binds its socket; it was a FileExistsError traceback, exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.daemon import EX_CONFIG, main


@pytest.mark.parametrize("key", ["state-dir", "run-dir"])
def test_a_file_where_a_folder_belongs_is_exit_78(tmp_path: Path, key: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "vm-agent.yaml"
    config.write_text("{}\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    sock = tmp_path / "agent.sock"
    dirs = {"state-dir": str(tmp_path / "state"), "run-dir": str(tmp_path / "run")}
    dirs[key] = str(blocker)
    argv = ["serve", "--config", str(config), "--socket", str(sock)]
    for name, path in dirs.items():
        argv += [f"--{name}", path]
    assert main(argv) == EX_CONFIG
    err = capsys.readouterr().err
    assert f"{key.replace('-', '_')}: cannot use {blocker}" in err
    assert "Traceback" not in err
    assert not sock.exists()
