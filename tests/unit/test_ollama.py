"""Ollama pure parts: the model-name grammar, name matching, timestamps, load impact,
the RAM bar, GPU visibility from device nodes, runner recognition, CLI rendering."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import clifmt, ollamafmt
from agent.errors import BadRequest
from agent.ollama import (
    MODEL_NAME_MAX_LEN,
    canonical,
    check_model_name,
    find_model,
    impact,
    utc_rfc3339,
)
from agent.ollamahost import NO_GPU_NOTE, gpu, is_runner, ram_bar

GOOD = ["llama3", "llama3.2:3b", "mistral:7b-instruct-q4_K_M", "myuser/custom-model:latest",
        "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "localhost:5000/ns/model:tag",
        "_private", "qwen2.5-coder:1.5b", "x" * 80 + ":" + "t" * 80]
BAD = ["", "-lead", ".lead", "a b", "a;b", "a/b/c/d", "ns.dot/model", "m:t:u", "m:",
       ":t", "x" * 81, "m:" + "t" * 81, "m@sha256-0123", "m/", "/m", "m\n", "ümlaut",
       "h" * 351 + "/ns/m"]


@pytest.mark.parametrize("name", GOOD)
def test_valid_names_pass(name: str) -> None:
    assert check_model_name(name) == name


@pytest.mark.parametrize("name", BAD)
def test_invalid_names_are_bad_requests(name: str) -> None:
    with pytest.raises(BadRequest) as err:
        check_model_name(name)
    assert err.value.details["field"] == "model"


def test_max_len_is_ollamas_max_name_length() -> None:
    longest = "h" * 350 + "/" + "n" * 80 + "/" + "m" * 80 + ":" + "t" * 80
    assert len(longest) == MODEL_NAME_MAX_LEN
    assert check_model_name(longest) == longest


def test_canonical_and_find_model() -> None:
    assert canonical("Llama3") == "llama3:latest"
    assert canonical("localhost:5000/ns/m") == "localhost:5000/ns/m:latest"
    assert canonical("ns/m:7b") == "ns/m:7b"
    models = [{"name": "llama3:latest"}, {"name": "ns/m:7b"}]
    assert find_model(models, "LLAMA3") == {"name": "llama3:latest"}
    assert find_model(models, "ns/m") is None
    assert find_model(models, "ns/m:7b") == {"name": "ns/m:7b"}


def test_utc_rfc3339() -> None:
    assert utc_rfc3339("2024-06-04T14:38:31.83753-07:00") == "2024-06-04T21:38:31Z"
    assert utc_rfc3339("2024-05-06T10:11:12.123456789+02:00") == "2024-05-06T08:11:12Z"
    assert utc_rfc3339("2024-05-06T10:11:12Z") == "2024-05-06T10:11:12Z"
    assert utc_rfc3339(None) is None and utc_rfc3339("soon") is None


def test_impact_example_sentence() -> None:
    result = impact("M", 7_800_000_000, 9_000_000_000, warn_free_bytes=3_000_000_000,
                    floor_bytes=1_500_000_000)
    assert result.predicted_free_bytes == 1_200_000_000 and result.level == "CRIT"
    assert result.warning == "Loading M (7.8 GB) will leave ~1.2 GB free; swap pressure likely"


@pytest.mark.parametrize(("free", "level"), [
    (1_499_999_999, "CRIT"), (1_500_000_000, "WARN"), (2_999_999_999, "WARN"),
    (3_000_000_000, "OK")])
def test_impact_level_boundaries(free: int, level: str) -> None:
    size = 1_000_000_000
    result = impact("m", size, free + size, warn_free_bytes=3_000_000_000,
                    floor_bytes=1_500_000_000)
    assert (result.predicted_free_bytes, result.level) == (free, level)


def test_impact_warn_and_ok_wording_and_negative_free() -> None:
    kw = {"warn_free_bytes": 3_000_000_000, "floor_bytes": 1_500_000_000}
    assert impact("m", 1_000_000_000, 3_500_000_000, **kw).warning == (
        "Loading m (1.0 GB) will leave ~2.5 GB free; memory will be tight")
    assert impact("m", 1_000_000_000, 9_000_000_000, **kw).warning == (
        "Loading m (1.0 GB) will leave ~8.0 GB free")
    over = impact("m", 9_000_000_000, 1_000_000_000, **kw)
    assert over.predicted_free_bytes == -8_000_000_000 and "~0.0 GB free" in over.warning


def test_impact_of_a_loaded_model_costs_nothing() -> None:
    result = impact("m", 9_000_000_000, 2_000_000_000, warn_free_bytes=3_000_000_000,
                    floor_bytes=1_500_000_000, already_loaded=True)
    assert result.predicted_free_bytes == 2_000_000_000 and result.level == "WARN"
    assert result.warning == "m is already loaded; ~2.0 GB free"


def test_ram_bar_parts_add_up_and_clamp() -> None:
    assert ram_bar(16_000, 6_000, 4_000) == {"total_bytes": 16_000, "system_used_bytes": 6_000,
                                             "models_bytes": 4_000, "free_bytes": 6_000}
    assert ram_bar(16_000, 10_000, 8_000)["system_used_bytes"] == 0


@pytest.mark.parametrize("node", ["nvidia0", "nvidiactl", "dri/renderD128", "kfd"])
def test_gpu_visible_from_a_device_node(tmp_path: Path, node: str) -> None:
    (tmp_path / node).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / node).touch()
    result = gpu(tmp_path)
    assert result["present"] is True and result["devices"] == [str(tmp_path / node)]
    assert Path(node).name in result["note"]


def test_no_gpu_note(tmp_path: Path) -> None:
    (tmp_path / "dri").mkdir()
    (tmp_path / "dri" / "card0").touch()  # a display node only: no render node
    assert gpu(tmp_path) == {"present": False, "devices": [], "note": NO_GPU_NOTE}
    assert NO_GPU_NOTE == "GPU: none, inference will run on the CPU"


def test_is_runner() -> None:
    assert is_runner("ollama", ["/usr/bin/ollama", "runner", "--model", "/b/sha256-1"])
    assert is_runner("ollama_llama_server", ["/usr/lib/ollama/ollama_llama_server"])
    assert is_runner("ollama_llama_se", [])
    assert not is_runner("ollama", ["/usr/bin/ollama", "serve"])
    assert not is_runner("python3", ["python3", "runner"])


def test_rendering() -> None:
    models = [{"name": "a:latest", "size_bytes": 4_700_000_000,
               "modified_at": "2024-05-06T17:11:12Z", "loaded": True}]
    assert "4.7 GB" in clifmt.render("ollama", models) and "loaded" in ollamafmt.render(models)
    loaded = {"models": [], "ram": {"total_bytes": 16e9, "system_used_bytes": 6e9,
                                    "models_bytes": 4e9, "free_bytes": 6e9},
              "gpu": {"present": False, "devices": [], "note": NO_GPU_NOTE},
              "runner": {"pids": [], "rss_bytes": 0, "cpu_percent": 0.0}}
    assert ollamafmt.render(loaded).splitlines() == [
        "no model loaded", "RAM 16.0 GB: system 6.0 GB, models 4.0 GB, free 6.0 GB",
        NO_GPU_NOTE]
    assert ollamafmt.render({"model": "m", "was_loaded": False}) == (
        "m was not loaded; nothing to do")
