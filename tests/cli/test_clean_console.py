"""A clean run prints no warning: nothing from fvcore, torch, open_clip, MLflow or Optuna
reaches the console of `suite run --method tempme --dataset synthetic`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = str(Path(sys.executable).parent / "suite")
TINY = ["--pretrained", "none", "--epochs", "1", "--batch-size", "4", "--set",
        "data.num_train=16", "--set", "data.num_val=4", "--set", "data.num_test=8"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_tempme_run_prints_no_warning(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    done = subprocess.run([SUITE, "run", "--method", "tempme", "--dataset", "synthetic", *TINY],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("run ") and "R-Sum" in done.stdout
    noise = [line for line in done.stderr.splitlines()
             if "Warning" in line or "warn(" in line or "Traceback" in line]
    assert noise == [], noise
