"""benchmarks/gpu_check.py: without a GPU one line and exit 0; with the device set to the CPU
(a tiny backbone) it runs every part and writes the one JSON file."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.subprocess
def test_without_a_gpu_it_says_so_and_exits_0(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "g.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().count("\n") == 0
    assert "no CUDA GPU" in done.stdout and not (tmp_path / "g.json").exists()


@pytest.mark.slow
@pytest.mark.subprocess
def test_on_the_cpu_every_part_runs_and_lands_in_one_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results" / "gpu_check.json"
    assert load().main(["--device", "cpu", "--backbones", "tiny-clip", "--batch", "2",
                        "--train-batch", "4", "--steps", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(r["method"], r["backbone"]) for r in result["inference"]] == [
        ("tempme", "tiny-clip"), ("lora", "tiny-clip")]
    assert all(r["videos_per_second"] > 0 and r["precision"] == "fp32"
               for r in result["inference"])
    assert all(r["seconds_per_step"] > 0 and r["steps"] == 2 for r in result["training"])
    tempme, lora = result["inference"]
    assert tempme["output_tokens"] < lora["output_tokens"]  # merging happened
    assert result["ddp"]["ok"], result["ddp"]["error"]
    assert result["machine"]["device"] == "cpu"
