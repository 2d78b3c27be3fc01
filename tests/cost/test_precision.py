"""Mixed precision: bf16 autocast on the CPU is real and close to fp32; fp16 needs CUDA."""


import pytest
import torch
from mlflow.tracking import MlflowClient
from tiny_runs import TINY_DATA, json_summary
from typer.testing import CliRunner

from methods import registry
from suite.cli import app
from suite.cost.device import autocast, cast_weights_once, grad_scaler, resolve_precision
from suite.cost.peak import Peaks
from suite.errors import UserError

CPU = torch.device("cpu")


def test_auto_trains_fp32_on_cpu_and_fp16_on_cuda():
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert resolve_precision("auto", torch.device("cuda"), "eval") == "fp16"
    assert resolve_precision("bf16", CPU) == "bf16"
    assert resolve_precision("fp32", CPU, "eval") == "fp32"
    assert not grad_scaler(CPU, "bf16").is_enabled()


@pytest.mark.parametrize(("bf16_rate", "evaluates"), [
    (4.2e11, "bf16"),  # AVX512-BF16 (1.8x the fp32 peak), or AMX (6.6x)
    (2.9e11, "fp32"),  # 1.26x: not much faster
    (5e8, "fp32"),  # emulated (AVX2 only: 500x slower)
])
def test_auto_evaluates_bf16_on_cpu_where_measured_much_faster(monkeypatch, bf16_rate,
                                                                evaluates):
    import suite.cost.peak

    peaks = Peaks("cpu", 2, torch.__version__,
                  {"fp32/torch": 1e11, "fp32/onednn": 2.3e11, "bf16": bf16_rate})
    monkeypatch.setattr(suite.cost.peak, "machine_peaks", lambda device: peaks)
    assert resolve_precision("auto", CPU, "eval") == evaluates
    assert resolve_precision("auto", CPU, "train") == "fp32"  # training stays fp32


@pytest.mark.slow
def test_weights_cast_once_give_plain_autocasts_results(tiny_clip):
    spec = registry.get("tempme")
    model = spec.build(tiny_clip, spec.make_config("tiny-clip", 4, {}), 4, "tiny-clip")
    model.fold().eval()
    frames, mask = torch.randn(2, 4, 3, 48, 48), torch.ones(2, 4, dtype=torch.bool)
    flags = [p.requires_grad for p in model.parameters()]
    with torch.no_grad():
        full = model.encode_video(frames, mask)
        with autocast(CPU, "bf16"):
            plain = model.encode_video(frames, mask)
        with cast_weights_once(model, "bf16"), autocast(CPU, "bf16"):
            cached = [model.encode_video(frames, mask) for _ in range(2)]
    assert [p.requires_grad for p in model.parameters()] == flags  # restored
    assert all(torch.equal(plain, c) for c in cached)
    cosine = torch.nn.functional.cosine_similarity(full, plain.float(), dim=-1)
    assert 0.99 < cosine.min() < 1.0


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


@pytest.mark.slow
def test_bf16_run_end_to_end_is_tagged(store):
    args = ["run", "--method", "tempme", "--pretrained", "none", "--epochs", "1",
            "--batch-size", "4", *TINY_DATA, "--set", "train.precision=bf16",
            "--tracking-uri", store, "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run_id = json_summary(result.stdout)["run_id"]
    run = MlflowClient(store).get_run(run_id)
    assert run.data.tags["precision"] == "bf16" and run.data.params["train.precision"] == "bf16"
    assert run.data.tags["eval_precision"] == "bf16"
    assert {"cpu_gemm", "flush_denormal", "reuse_memory"} <= set(run.data.tags)
    assert torch.isfinite(torch.tensor(run.data.metrics["train/loss"]))


def test_fp16_on_cpu_exits_2_with_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--method", "lora", "--device", "cpu",
                                      "--set", "train.precision=fp16"])
    assert result.exit_code == 2
    assert result.output.strip() == ("error: precision fp16 needs a CUDA device; "
                                     "on the CPU use bf16 or fp32")
    assert not (tmp_path / "mlflow.db").exists()  # refused before a run was opened
