"""CLI: fast help, one-line user errors with exit code 2, listings."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from suite.cli import app

runner = CliRunner()


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.subprocess
def test_help_imports_nothing_heavy():
    """`suite --help` stays fast because the CLI module defers torch, open_clip, mlflow, optuna."""
    code = ("import sys; from suite.cli import app; "
            "print([m for m in ('torch', 'open_clip', 'mlflow', 'optuna') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    help_text = subprocess.run([sys.executable, "-m", "suite.cli", "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "run" in help_text and "profile" in help_text


@pytest.mark.parametrize("args, fragment", [
    (["run", "--method", "nope"], "unknown method 'nope'; valid:"),
    (["run", "--method", "lora", "--dataset", "nope"], "unknown dataset 'nope'; valid:"),
    (["run", "--method", "lora", "--set", "train.nope=1"], "unknown setting 'train.nope'"),
    (["run", "--method", "lora", "--set", "oops"], "--set expects key=value"),
    (["run", "--method", "lora", "--set", "method.rnak=4"], "no option rnak; valid: rank"),
    (["run", "--method", "lora", "--backbone", "ViT-Q-99"], "unknown backbone 'ViT-Q-99'"),
    (["run", "--method", "lora", "--device", "tpu"], "unknown device 'tpu'"),
    (["run"], "--method is required"),
    (["run", "--config", "/no/such/config.json"], "does not exist"),
    (["list", "things"], "cannot list 'things'; valid: methods, datasets, backbones"),
    (["run", "--method", "tempme", "--set", "method.clip_groups=[5,2,3]"], "divide"),
    (["run", "--method", "tempme", "--set", "method.clip_layers=[3,4,9]"], "valid layers"),
    (["profile", "--method", "tempme", "--backbone", "tiny-clip", "--set",
      "method.clip_groups=[5,2,3]"], "divide"),
    (["profile"], "--method M or --all is required"),
    (["profile", "--method", "nope"], "unknown method 'nope'"),
])
def test_user_errors_are_one_line_with_exit_code_2(args, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an MLflow store, if any, lands here
    line = one_line_error(runner.invoke(app, args))
    assert fragment in line


def test_list_methods_and_datasets():
    methods = runner.invoke(app, ["list", "methods"])
    assert methods.exit_code == 0
    assert {"zeroshot", "full", "lora"} <= {line.split()[0] for line in methods.output.splitlines()}
    datasets = runner.invoke(app, ["list", "datasets"])
    assert "synthetic" in datasets.output


@pytest.mark.parametrize("command", ["run", "sweep", "report", "profile", "prepare", "list",
                                     "merges", "abandoned", "bench"])
def test_every_command_that_prints_results_takes_json(command):
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0 and "--json" in result.output


def test_the_same_flag_names_for_the_same_things():
    helps = {c: runner.invoke(app, [c, "--help"], terminal_width=200).output
             for c in ("run", "sweep", "profile")}
    assert "--batch-size" in helps["run"] and "--batch-size" in helps["profile"]
    assert "--seed" in helps["run"] and "--seed" in helps["sweep"]
    assert "--batch " not in helps["profile"]
