"""Mixed precision: bf16 autocast on the CPU is real and close to fp32; fp16 needs CUDA."""


import pytest
import torch
from mlflow.tracking import MlflowClient
from tiny_runs import TINY_DATA, json_summary
from typer.testing import CliRunner

from methods import registry
from suite.cli import app
from suite.device import autocast, grad_scaler, resolve_precision
from suite.errors import UserError

CPU = torch.device("cpu")


def test_auto_is_fp32_on_cpu_and_fp16_on_cuda():
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert resolve_precision("bf16", CPU) == "bf16"
    assert not grad_scaler(CPU, "bf16").is_enabled()


@pytest.mark.parametrize("precision, fragment", [("fp16", "needs a CUDA device"),
                                                 ("half", "unknown precision 'half'")])
def test_bad_precision_is_a_user_error(precision, fragment):
    with pytest.raises(UserError, match=fragment):
        resolve_precision(precision, CPU)


@pytest.mark.parametrize("method", ["lora", "tempme"])
def test_bf16_autocast_runs_the_towers_in_bf16_close_to_fp32(tiny_clip, method):
    spec = registry.get(method)
    model = spec.build(tiny_clip, spec.make_config("tiny-clip", 4, {}), 4, "tiny-clip").eval()
    torch.manual_seed(1)
    frames, mask = torch.randn(3, 4, 3, 48, 48), torch.ones(3, 4, dtype=torch.bool)
    ids = torch.randint(1, 400, (3, 16))
    with torch.no_grad():
        full = model.encode_video(frames, mask), model.encode_text(ids)
        with autocast(CPU, "bf16"):
            half = model.encode_video(frames, mask), model.encode_text(ids)
    for a, b in zip(full, half, strict=True):
        assert b.dtype == torch.bfloat16  # autocast took effect
        assert not torch.equal(a, b.float())
        cosine = torch.nn.functional.cosine_similarity(a, b.float(), dim=-1)
        assert cosine.min() > 0.99


def test_bf16_run_end_to_end_is_tagged(store):
    args = ["run", "--method", "tempme", "--pretrained", "none", "--epochs", "1",
            "--batch-size", "4", *TINY_DATA, "--set", "train.precision=bf16",
            "--tracking-uri", store, "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run_id = json_summary(result.stdout)["run_id"]
    run = MlflowClient(store).get_run(run_id)
    assert run.data.tags["precision"] == "bf16" and run.data.params["train.precision"] == "bf16"
    assert torch.isfinite(torch.tensor(run.data.metrics["train/loss"]))


def test_fp16_on_cpu_exits_2_with_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--method", "lora", "--device", "cpu",
                                      "--set", "train.precision=fp16"])
    assert result.exit_code == 2
    assert result.output.strip() == ("error: precision fp16 needs a CUDA device; "
                                     "on the CPU use bf16 or fp32")
    assert not (tmp_path / "mlflow.db").exists()  # refused before a run was opened
