"""Strict config loading: agent.configload, agent.configyaml, agent.configdoc, etc/vm-agent.yaml."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent import configdoc
from agent.config import Config, ThresholdsConfig
from agent.configload import config_digest, effective_config, load_config, load_settings
from agent.configtable import iter_fields
from agent.configyaml import config_files
from agent.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "etc" / "vm-agent.yaml"
NO_ENV: dict[str, str] = {}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load_text(tmp_path: Path, text: str, **confd: str) -> Config:
    base = write(tmp_path / "vm-agent.yaml", text)
    for name, body in confd.items():
        write(tmp_path / "conf.d" / name, body)
    return load_config(base, environ=NO_ENV)


def error_of(tmp_path: Path, text: str, **confd: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, **confd)
    return info.value


def leaf_paths(cls: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for f, tp in iter_fields(cls):
        name = prefix + f.name
        out |= leaf_paths(tp, name + ".") if dataclasses.is_dataclass(tp) else {name}
    return out


def yaml_leaf_paths(data: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in data.items():
        name = prefix + key
        out |= yaml_leaf_paths(value, name + ".") if isinstance(value, dict) else {name}
    return out


# ---------------------------------------------------------------- defaults and layering

def test_defaults_without_a_file() -> None:
    cfg = load_config(None, environ=NO_ENV)
    assert cfg == Config()
    assert cfg.server.socket_mode == 0o660
    assert cfg.access.viewer.groups == ("vm-agent",)
    assert cfg.thresholds.steal_percent.warn == 5.0
    assert isinstance(cfg.thresholds.steal_percent.warn, float)
    assert cfg.docker.host == "unix:///var/run/docker.sock"


def test_empty_file_and_empty_section_give_defaults(tmp_path: Path) -> None:
    assert load_text(tmp_path, "") == load_config(None, environ=NO_ENV)
    assert load_text(tmp_path, "server:\n  # socket: /x\n") == load_config(None, environ=NO_ENV)
    cfg = load_text(tmp_path, "server:\n  max_connections: 10\n",
                    **{"50-x.yaml": "server:\n  # max_connections: 20\n"})
    assert cfg.server.max_connections == 10          # an empty section changes nothing


def test_confd_overrides_in_name_order_later_wins(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        "server:\n  max_connections: 10\n  client_timeout_s: 3\nsampling:\n  disks: [/, /a]\n",
        **{"20-b.yaml": "server:\n  max_connections: 30\n",
           "10-a.yaml": "server:\n  max_connections: 20\nsampling:\n  disks: [/b]\n",
           "README": "not: yaml: at all: [",
           "99-off.yml": "server: {max_connections: 99}\n",
           ".hidden.yaml": "server: {max_connections: 98}\n"})
    assert cfg.server.max_connections == 30
    assert cfg.server.client_timeout_s == 3.0          # kept from the base file
    assert cfg.sampling.disks == ("/b",)               # lists replace, never append
    assert cfg.access.viewer.groups == ("vm-agent",)   # untouched defaults stay
    names = [p.name for p in config_files(tmp_path / "vm-agent.yaml")]
    assert names == ["vm-agent.yaml", "10-a.yaml", "20-b.yaml"]


def test_partial_nested_section_merges_with_defaults(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "access:\n  viewer:\n    gids: [990]\n")
    assert cfg.access.viewer == dataclasses.replace(Config().access.viewer, gids=(990,))


def test_docker_host_from_environ_and_file_wins(tmp_path: Path) -> None:
    env = {"DOCKER_HOST": "tcp://127.0.0.1:2375"}
    assert load_config(None, environ=env).docker.host == "tcp://127.0.0.1:2375"
    assert load_config(None, environ={"DOCKER_HOST": ""}).docker.host == Config().docker.host
    base = write(tmp_path / "c.yaml", "docker:\n  host: unix:///tmp/d.sock\n")
    assert load_config(base, environ=env).docker.host == "unix:///tmp/d.sock"


def test_bad_docker_host_in_environ_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"DOCKER_HOST": "/var/run/docker.sock"})
    assert info.value.key == "docker.host"
    assert "environment variable DOCKER_HOST" in str(info.value)
    assert "(unix|tcp|ssh|npipe)" in str(info.value)


# ---------------------------------------------------------------- strictness

def test_unknown_top_level_key_suggests_and_lists(tmp_path: Path) -> None:
    e = error_of(tmp_path, "sever:\n  socket: /x\n")
    assert e.key == "sever"
    assert "did you mean 'server'" in str(e)
    assert ", ".join(f.name for f in dataclasses.fields(Config)) in str(e)
    assert f"{tmp_path / 'vm-agent.yaml'}:1" in str(e)


def test_unknown_nested_key(tmp_path: Path) -> None:
    e = error_of(tmp_path, "thresholds:\n  steal_percent:\n    wran: 3\n")
    assert e.key == "thresholds.steal_percent.wran"
    assert "did you mean 'warn'" in str(e)
    assert "warn, crit" in str(e)
    assert str(e).endswith(":3)")


def test_unknown_key_without_a_close_match(tmp_path: Path) -> None:
    e = error_of(tmp_path, "server:\n  zzzz: 1\n")
    assert "did you mean" not in str(e)
    assert "socket, socket_mode, max_connections" in str(e)


@pytest.mark.parametrize(("text", "key", "expected"), [
    ("server:\n  max_connections: many\n", "server.max_connections",
     "expected integer, got string 'many'"),
    ("server:\n  max_connections: 10.5\n", "server.max_connections",
     "expected integer, got number 10.5"),
    ("server:\n  max_connections: true\n", "server.max_connections",
     "expected integer, got boolean true"),
    ("sampling:\n  interval_s: '10'\n", "sampling.interval_s",
     "expected number, got string '10'"),
    ("sampling:\n  interval_s: .nan\n", "sampling.interval_s", "expected a finite number"),
    ("sampling:\n  disks: /srv\n", "sampling.disks", "expected a list of string, got string"),
    ("sampling:\n  disks: [/, 5]\n", "sampling.disks[1]", "expected string, got integer 5"),
    ("server: [1, 2]\n", "server", "expected a section with keys socket, socket_mode"),
    ("state_dir: {a: 1}\n", "state_dir", "expected string, got mapping"),
])
def test_wrong_type(tmp_path: Path, text: str, key: str, expected: str) -> None:
    e = error_of(tmp_path, text)
    assert e.key == key
    assert expected in str(e)


@pytest.mark.parametrize(("text", "key", "expected"), [
    ("server:\n  max_connections: 0\n", "server.max_connections",
     "got 0; allowed: 1 to 4096"),
    ("server:\n  socket_mode: 01000\n", "server.socket_mode",
     "got 01000; allowed: 0 to 0777"),
    ("access:\n  operator:\n    uids: [0, -1]\n", "access.operator.uids[1]",
     "got -1; allowed: >= 0"),
    ("thresholds:\n  iowait_percent: {warn: -1}\n", "thresholds.iowait_percent.warn",
     "got -1.0; allowed: >= 0"),
    ("docker:\n  host: http://x\n", "docker.host",
     "got \"http://x\"; allowed: matches (unix|tcp|ssh|npipe)"),
])
def test_out_of_range(tmp_path: Path, text: str, key: str, expected: str) -> None:
    e = error_of(tmp_path, text)
    assert e.key == key
    assert expected in str(e)


def test_null_only_where_the_type_allows(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "thresholds:\n  swap_used_bytes:\n    crit: null\n")
    assert cfg.thresholds.swap_used_bytes.crit is None
    assert cfg.thresholds.swap_used_bytes.warn == 1.5e9
    e = error_of(tmp_path, "server:\n  max_connections: null\n")
    assert (e.key, "expected integer, got null") == (e.key, e.message.split(" (")[0])
    e = error_of(tmp_path, "sampling:\n  disks: [null]\n")
    assert e.key == "sampling.disks[0]"


def test_lists_become_tuples_and_numbers_convert(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "sampling:\n  disks: [/, /srv]\n  interval_s: 30\n"
                              "thresholds:\n  swap_used_bytes: {warn: 2e9, crit: 3.5e+9}\n"
                              "server:\n  socket_mode: 0600\n")
    assert cfg.sampling.disks == ("/", "/srv")
    assert cfg.sampling.interval_s == 30.0 and isinstance(cfg.sampling.interval_s, float)
    assert cfg.thresholds.swap_used_bytes.warn == 2e9
    assert cfg.thresholds.swap_used_bytes.crit == 3.5e9
    assert cfg.server.socket_mode == 0o600


def test_error_names_the_confd_file_and_line(tmp_path: Path) -> None:
    e = error_of(tmp_path, "server:\n  max_connections: 10\n",
                 **{"10-ok.yaml": "server:\n  max_connections: 20\n",
                    "50-bad.yaml": "# host override\nserver:\n  max_connections: 0\n"})
    assert e.key == "server.max_connections"
    assert str(tmp_path / "conf.d" / "50-bad.yaml") + ":3" in str(e)
    assert "10-ok.yaml" not in str(e)


def test_threshold_crit_must_lie_beyond_warn(tmp_path: Path) -> None:
    e = error_of(tmp_path, "thresholds:\n  steal_percent: {warn: 5, crit: 15}\n",
                 **{"50-x.yaml": "thresholds:\n  steal_percent: {warn: 20}\n"})
    assert e.key == "thresholds.steal_percent.crit"
    assert "must be above warn" in str(e)
    assert "50-x.yaml:2" in str(e) and "vm-agent.yaml:2" in str(e)


def test_memory_available_is_lower_is_worse(tmp_path: Path) -> None:
    assert ThresholdsConfig.lower_is_worse("memory_available_bytes")
    assert not ThresholdsConfig.lower_is_worse("swap_used_bytes")
    e = error_of(tmp_path, "thresholds:\n  memory_available_bytes: {crit: 2e9}\n")
    assert e.key == "thresholds.memory_available_bytes.crit"
    assert "must be below warn" in str(e)
    assert "built-in defaults" in str(e)       # warn came from the defaults
    cfg = load_text(tmp_path, "thresholds:\n  memory_available_bytes: {warn: 3e9, crit: 2e9}\n")
    assert cfg.thresholds.memory_available_bytes.crit == 2e9


# ---------------------------------------------------------------- files and YAML

def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "nope.yaml"))):
        load_config(tmp_path / "nope.yaml", environ=NO_ENV)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(tmp_path, environ=NO_ENV)


def test_yaml_syntax_error_has_file_and_line(tmp_path: Path) -> None:
    e = error_of(tmp_path, "server:\n  socket: /x\n  max_connections: [1\n")
    assert re.search(re.escape(str(tmp_path / "vm-agent.yaml")) + r":\d+:\d+: YAML syntax", str(e))
    e = error_of(tmp_path, "", **{"10-x.yaml": "server:\n\tsocket: /x\n"})
    assert str(tmp_path / "conf.d" / "10-x.yaml") + ":2:" in str(e)


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    e = error_of(tmp_path, "server:\n  max_connections: 10\n  max_connections: 20\n")
    assert e.key == "server.max_connections"
    assert "duplicate key (lines 2 and 3" in str(e)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "top level must be a mapping" in str(error_of(tmp_path, "- a\n- b\n"))


def test_key_must_be_a_string(tmp_path: Path) -> None:
    assert "keys must be strings, got integer 1" in str(error_of(tmp_path, "server:\n  1: x\n"))


# ---------------------------------------------------------------- generic walker

@dataclass(frozen=True)
class _Item:
    name: str = field(default="x", metadata={"help": "name", "pattern": r"[a-z]+"})
    weight: int = field(default=1, metadata={"help": "weight", "min": 1})


@dataclass(frozen=True)
class _Table:
    enabled: bool = field(default=False, metadata={"help": "switch"})
    label: str = field(default="a", metadata={"help": "label", "choices": ("a", "NO", "yes")})
    items: tuple[_Item, ...] = field(default=(), metadata={"help": "list of sections"})
    by_name: dict[str, _Item] = field(default_factory=dict, metadata={"help": "map"})
    token: str = field(default="", metadata={"help": "secret", "secret": True})


def load_table(tmp_path: Path, text: str) -> _Table:
    return load_settings(_Table, write(tmp_path / "t.yaml", text), environ=NO_ENV)


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "y", "1", "'true'"])
def test_bool_is_only_a_real_yaml_boolean(tmp_path: Path, word: str) -> None:
    with pytest.raises(ConfigError, match=r"enabled: expected boolean \(true or false\), got"):
        load_table(tmp_path, f"enabled: {word}\n")


def test_true_false_and_norway(tmp_path: Path) -> None:
    assert load_table(tmp_path, "enabled: true\n").enabled is True
    assert load_table(tmp_path, "enabled: False\n").enabled is False
    assert load_table(tmp_path, "label: NO\n").label == "NO"      # YAML 1.1 would say False
    assert load_table(tmp_path, "label: yes\n").label == "yes"
    with pytest.raises(ConfigError, match=r"label: got \"b\"; allowed: one of: a, NO, yes"):
        load_table(tmp_path, "label: b\n")


def test_sections_inside_lists_and_maps(tmp_path: Path) -> None:
    t = load_table(tmp_path, "items: [{name: ab}, {weight: 3}]\nby_name: {k: {weight: 2}}\n")
    assert t.items == (_Item("ab", 1), _Item("x", 3))
    assert t.by_name == {"k": _Item("x", 2)}
    with pytest.raises(ConfigError) as info:
        load_table(tmp_path, "items:\n  - name: ab\n  - name: A1\n")
    assert info.value.key == "items[1].name"
    assert "t.yaml:3" in str(info.value)
    with pytest.raises(ConfigError, match=r"by_name\.k\.wieght: unknown key 'wieght' "
                                          r"\(did you mean 'weight'\?\); allowed"):
        load_table(tmp_path, "by_name: {k: {wieght: 2}}\n")


def test_unsupported_table_type_is_a_programming_error(tmp_path: Path) -> None:
    @dataclass(frozen=True)
    class Bad:
        x: set[int] = field(default_factory=set)
    with pytest.raises(TypeError, match="unsupported type"):
        load_settings(Bad, write(tmp_path / "b.yaml", "x: [1]\n"), environ=NO_ENV)


# ---------------------------------------------------------------- effective config, digest

def test_effective_config_is_plain_json(tmp_path: Path) -> None:
    eff = effective_config(load_config(None, environ=NO_ENV))
    assert json.loads(json.dumps(eff)) == eff
    assert eff["sampling"]["disks"] == ["/"]
    assert eff["thresholds"]["swap_cached_bytes"] == {"warn": 2e8, "crit": None}
    t = load_table(tmp_path, "token: s3cret\n")
    assert effective_config(t)["token"] == "s3cret"
    assert effective_config(t, redact_secrets=True)["token"] == "***"


def test_digest_follows_values_not_spelling(tmp_path: Path) -> None:
    default = config_digest(load_config(None, environ=NO_ENV))
    assert re.fullmatch(r"[0-9a-f]{64}", default)
    same = load_text(tmp_path, "# comment\nsampling: {interval_s: 10}\n"
                               "server: {socket_mode: 0660}\n")
    assert config_digest(same) == default
    other = load_text(tmp_path, "sampling: {interval_s: 11}\n")
    assert config_digest(other) != default


# ---------------------------------------------------------------- shipped file and docs

def test_shipped_config_loads_to_the_defaults() -> None:
    assert load_config(SHIPPED, environ=NO_ENV) == load_config(None, environ=NO_ENV)
    env = {"DOCKER_HOST": "tcp://127.0.0.1:1"}
    assert load_config(SHIPPED, environ=env).docker.host == "tcp://127.0.0.1:1"


def test_shipped_config_mentions_every_key_in_table_order() -> None:
    text = SHIPPED.read_text()
    data = yaml.safe_load(text)
    table = leaf_paths(Config)
    assert yaml_leaf_paths(data) | {"docker.host"} == table
    assert re.search(r"^\s+# host: unix:///var/run/docker\.sock$", text, re.M)
    assert list(data) == [f.name for f, _ in iter_fields(Config)]
    assert re.search(r"#\s+gids: \[\d+\]", text)               # the dashboard gid example


def test_config_doc_is_up_to_date() -> None:
    doc = (REPO / "docs" / "CONFIG.md").read_text()
    assert doc == configdoc.render(), "run: python -m agent.configdoc > docs/CONFIG.md"
    for path in leaf_paths(Config):
        assert f"| `{path}` |" in doc
