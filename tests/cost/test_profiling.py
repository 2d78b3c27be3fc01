"""`suite profile` and the measurement helpers behind it, on the tiny backbone."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from suite.cli import app
from suite.cost.peak import machine_peaks
from suite.cost.profiling import Timing, time_calls

runner = CliRunner()


@pytest.mark.slow
def test_profile_json_reports_every_figure_for_tiny_tempme():
    result = runner.invoke(app, ["profile", "--method", "tempme", "--backbone", "tiny-clip",
                                 "--batch-size", "2", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    # 12 frames of 37 tokens merge down to one sequence (tempme.defaults for tiny-clip).
    assert row["output_tokens"] < 12 * 37
    assert row["params_trainable"] == (6 + 4) * (8 * 64 + 3 * 64 * 8) + (12 + 6 + 3) * 64
    assert row["params_total"] > row["params_trainable"]
    assert row["video_gmacs"] > 0 and row["text_gmacs"] > 0
    assert row["videos_per_second"] > 0
    assert row["videos_per_second_q1"] <= row["videos_per_second_q3"]
    assert row["seconds_per_step"] > 0 and row["training_peak_mib"] > 0
    assert {"device", "torch", "threads", "batch", "cpu", "cpu_flags", "cpu_gemm",
            "flush_denormal", "reuse_memory"} <= set(row)
    # FLOP/s = 2 x multiply-adds x videos/s, set against this machine's fp32 peak
    assert row["precision"] == "fp32"
    assert row["gflop_per_second"] == pytest.approx(
        2 * row["video_gmacs"] * row["videos_per_second"])
    assert row["peak_gflop_per_second"] == pytest.approx(
        machine_peaks(torch.device("cpu")).fp32 / 1e9)
    assert row["peak_share"] == pytest.approx(
        row["gflop_per_second"] / row["peak_gflop_per_second"])


@pytest.mark.slow
def test_counts_only_reports_counts_without_timing():
    args = ["profile", "--method", "tempme", "--backbone", "tiny-clip", "--device", "cpu"]
    counted = runner.invoke(app, [*args, "--counts-only", "--json"])
    assert counted.exit_code == 0, counted.output
    row = json.loads(counted.stdout)
    assert set(row) == {"method", "backbone", "frames", "words", "video_gmacs", "text_gmacs",
                        "output_tokens", "params_total", "params_trainable"}
    timed = json.loads(runner.invoke(app, [*args, "--batch-size", "1", "--json"]).stdout)
    assert {k: timed[k] for k in row} == row  # the same counts as the full profile
    table = runner.invoke(app, [*args, "--counts-only", "--markdown"]).stdout
    assert table.splitlines()[0] == ("| method | video GFLOPs | text GFLOPs | out tokens | "
                                     "trainable | total params |")
    assert "GFLOP/s" not in table and "of peak" not in table  # no terms of absent columns


@pytest.mark.slow
def test_profile_bf16_is_set_against_the_bf16_peak():
    result = runner.invoke(app, ["profile", "--method", "lora", "--backbone", "tiny-clip",
                                 "--batch-size", "1", "--device", "cpu", "--precision", "bf16",
                                 "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["precision"] == "bf16"
    assert row["peak_gflop_per_second"] == pytest.approx(
        machine_peaks(torch.device("cpu")).of("bf16") / 1e9)


@pytest.mark.slow
def test_profile_all_lists_every_method_and_merging_saves_work():
    result = runner.invoke(app, ["profile", "--all", "--backbone", "tiny-clip", "--batch-size", "1",
                                 "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["method"]: row for row in json.loads(result.stdout)}
    assert {"zeroshot", "full", "lora", "tempme", "tempme-full"} <= set(rows)
    assert rows["lora"]["video_gmacs"] == rows["zeroshot"]["video_gmacs"]  # LoRA folded
    assert rows["tempme"]["video_gmacs"] < rows["lora"]["video_gmacs"]
    assert rows["zeroshot"]["params_trainable"] == 0
    assert np.isnan(rows["zeroshot"]["seconds_per_step"])


PEAK_PROBE = """
import json, sys, time
import torch
from suite.cost import profiling
if sys.argv[1] == "sampling":
    profiling._reset_high_water_mark = lambda: False
cpu = torch.device("cpu")
big = torch.ones(256 * 2**20 // 4)  # 1 GiB of float32, touched, freed before measuring
big.sum()
del big
with profiling.PeakMemory(cpu) as baseline:
    torch.zeros(1).sum()
with profiling.PeakMemory(cpu) as block:
    x = torch.ones(64 * 2**20)  # 256 MiB, touched
    x.sum()
    time.sleep(0.2 if sys.argv[1] == "sampling" else 0.0)
    del x
print(json.dumps([baseline.peak_mib, block.peak_mib]))
"""


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("mode", ["high-water-mark", "sampling"])
def test_peak_memory_sees_an_allocation_and_forgets_earlier_peaks(mode):
    """In a fresh process, so no other test's allocator state decides what becomes resident: the
    peak of a block counts a 256 MiB allocation, but not the 1 GiB freed before the block."""
    out = subprocess.run([sys.executable, "-c", PEAK_PROBE, mode], capture_output=True,
                         text=True, check=True)
    baseline, peak = json.loads(out.stdout)
    assert peak >= baseline + 200
    assert baseline < peak < baseline + 600  # the earlier 1 GiB is not this block's peak


def test_time_calls_warms_up_then_times_each_call():
    calls = []
    seconds = time_calls(lambda: calls.append(1), torch.device("cpu"), warmup=2, repeats=10)
    assert len(calls) == 12 and len(seconds) == 10 and all(s >= 0 for s in seconds)
    timing = Timing.of([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (timing.q1, timing.median, timing.q3) == (2.0, 3.0, 4.0)


@pytest.mark.slow
def test_profile_markdown_table_has_a_row_per_method():
    result = runner.invoke(app, ["profile", "--method", "lora", "--backbone", "tiny-clip",
                                 "--batch-size", "1", "--device", "cpu", "--markdown"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("| method | video GFLOPs |")
    assert lines[1].startswith("|:---|---:|")  # the project's one Markdown renderer
    assert lines[2].startswith("| lora |") and lines[4].startswith("tiny-clip, 12 frames")
    assert len(lines) == 5


@pytest.mark.slow
def test_the_compiled_tower_gives_the_eager_embeddings_and_is_put_back(tiny_clip):
    from methods import registry
    from suite.cost.profiling import compiled_video_tower

    spec = registry.get("tempme")
    model = spec.build(tiny_clip, spec.make_config("tiny-clip", 4, {}), 4, "tiny-clip")
    model.fold().eval()
    frames, mask = torch.randn(2, 4, 3, 48, 48), torch.ones(2, 4, dtype=torch.bool)
    eager = model.video_encoder
    with torch.no_grad():
        expected = model.encode_video(frames, mask)
        with compiled_video_tower(model, backend="eager"):  # dynamo's graphs, no inductor
            assert model.video_encoder is not eager
            got = model.encode_video(frames, mask)
    assert model.video_encoder is eager
    torch.testing.assert_close(got, expected)
