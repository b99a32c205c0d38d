"""minires.config: every switch and MINIRES_* variable in one place, validated, with using();
the public setters are thin wrappers over it; nothing happens at import."""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys

import pytest

import minires.functional as F
from minires import config, nn
from minires.kernels import fused, parallel
from minires.ops.loss import set_gpu_target_checks

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env), cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_defaults_without_environment():
    values = config.read_environment({})
    assert values["fusion"] is True and values["fast_paths"] is True and values["malloc_tuning"] is True
    assert values["device"] == "cpu" and values["data"] is None and values["debug"] is False
    assert values["conv_algorithm"] == "auto" and values["num_threads"] == max(1, os.cpu_count() or 1)
    assert set(values) == set(config.SETTINGS)


@pytest.mark.parametrize("text, expected", [("0", False), ("OFF", False), ("False", False), (" no ", False),
                                            ("1", True), ("On", True), ("TRUE", True), ("yes", True)])
def test_booleans_are_case_insensitive(text, expected):
    assert config.read_environment({"MINIRES_FUSION": text})["fusion"] is expected
    assert config.read_environment({"MINIRES_MALLOC_TUNING": text})["malloc_tuning"] is expected


@pytest.mark.parametrize("variable, text", [("MINIRES_NUM_THREADS", "-1"), ("MINIRES_NUM_THREADS", "abc"),
                                            ("MINIRES_NUM_THREADS", "0"), ("MINIRES_FUSION", "maybe"),
                                            ("MINIRES_DEVICE", "tpu"), ("MINIRES_CUDA_GRAPH", "2")])
def test_garbage_in_the_environment_is_an_error_naming_the_variable(variable, text):
    with pytest.raises(ValueError, match=f"{variable}='{text}' is not valid"):
        config.read_environment({variable: text})


def test_environment_values_are_parsed():
    values = config.read_environment({"MINIRES_NUM_THREADS": " 3 ", "MINIRES_DEVICE": "CUDA",
                                      "MINIRES_DATA": "/some/where", "MINIRES_CUDA_GRAPH": "1"})
    assert values["num_threads"] == 3 and values["device"] == "cuda:0"
    assert values["data"] == "/some/where" and values["cuda_graph"] is True


def test_fusion_off_by_environment_in_a_fresh_process():
    result = _run("import minires.nn as nn; print(nn.fusion_enabled())", MINIRES_FUSION="OFF")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_bad_thread_count_fails_at_first_use_with_the_variable_named():
    code = ("import minires, minires.functional as F\n"
            "F.relu(minires.randn(2, 2))\n"            # import and a small op: no thread count needed
            "from minires.kernels import parallel\n"
            "parallel.parallel_for(lambda lo, hi: None, 10)\n")
    result = _run(code, MINIRES_NUM_THREADS="abc")
    assert result.returncode != 0
    assert "ValueError: MINIRES_NUM_THREADS='abc' is not valid: expected a positive int" in result.stderr


def test_set_and_using_validate_and_restore():
    before = config.get("fusion")
    with config.using(fusion=not before, num_threads=1):
        assert config.get("fusion") is (not before) and config.get("num_threads") == 1
        with config.using(fusion=before):
            assert config.get("fusion") is before
        assert config.get("fusion") is (not before)
    assert config.get("fusion") is before
    with pytest.raises(ValueError, match="num_threads: expected a positive int"):
        config.set(num_threads=0)
    with pytest.raises(ValueError, match="fusion: expected True/False"):
        config.set(fusion=3)
    with pytest.raises(KeyError, match="unknown setting 'fuse'.*fusion"):
        config.get("fuse")
    with pytest.raises(KeyError, match="unknown setting"):
        with config.using(fuse=False):
            pass
    assert config.get("fusion") is before


def test_using_restores_after_an_error():
    with pytest.raises(RuntimeError):
        with config.using(fast_paths=False):
            raise RuntimeError
    assert config.get("fast_paths") is True


def test_live_settings_follow_the_environment_unless_set(monkeypatch):
    monkeypatch.setenv("MINIRES_DATA", "/first")
    assert config.get("data") == "/first"
    monkeypatch.setenv("MINIRES_DATA", "/second")
    assert config.get("data") == "/second"
    with config.using(data="/chosen"):
        assert config.get("data") == "/chosen"
    assert config.get("data") == "/second"


def test_public_setters_are_thin_wrappers():
    with config.using(fusion=True, fast_paths=True, conv_algorithm="auto", num_threads=2, gpu_target_checks=True):
        nn.set_fusion(False)
        assert config.get("fusion") is False and not nn.fusion_enabled()
        F.set_conv_algorithm("reference")
        assert config.get("conv_algorithm") == "reference" == F.get_conv_algorithm()
        with pytest.raises(ValueError, match="unknown algorithm 'fastest'"):
            F.set_conv_algorithm("fastest")
        parallel.set_num_threads(1)
        assert config.get("num_threads") == 1 == parallel.get_num_threads()
        fused.set_fast_paths(False)
        assert config.get("fast_paths") is False and not fused.fast_paths_enabled()
        assert set_gpu_target_checks(False) is True and config.get("gpu_target_checks") is False
    assert nn.fusion_enabled() and F.get_conv_algorithm() == "auto" and fused.fast_paths_enabled()


def test_config_imports_nothing_from_minires():
    tree = ast.parse((REPO / "minires" / "config.py").read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in imported if name.startswith("minires") or name == ""], imported
    assert all(node.level == 0 for node in ast.walk(tree) if isinstance(node, ast.ImportFrom))


def test_no_minires_variable_is_read_outside_config():
    readers = []
    for path in (REPO / "minires").rglob("*.py"):
        if path.name != "config.py":
            text = path.read_text()
            if "os.environ" in text and "MINIRES_" in text or "getenv(\"MINIRES" in text:
                readers.append(str(path.relative_to(REPO)))
    assert readers == []


def test_the_command_line_refuses_a_bad_variable_before_writing_anything(tmp_path, capsys, monkeypatch):
    from minires.cli import main

    monkeypatch.setenv("MINIRES_NUM_THREADS", "abc")
    out = tmp_path / "run"
    assert main(["train", "--data", "embedded", "--epochs", "1", "--train-subset", "64", "--test-subset", "32",
                 "--no-progress", "--no-plot", "--out", str(out)]) == 2
    assert "minires: error: MINIRES_NUM_THREADS='abc' is not valid: expected a positive int" in capsys.readouterr().err
    assert not out.exists()
