"""`suite profile` and the measurement helpers behind it, on the tiny backbone."""

import json
import time

import numpy as np
import torch
from typer.testing import CliRunner

from suite import profiling
from suite.cli import app
from suite.profiling import PeakMemory, Timing, time_calls

runner = CliRunner()


def test_profile_json_reports_every_figure_for_tiny_tempme():
    result = runner.invoke(app, ["profile", "--method", "tempme", "--backbone", "tiny-clip",
                                 "--batch", "2", "--device", "cpu", "--json"])
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
    assert {"device", "torch", "threads", "batch"} <= set(row)


def test_profile_all_lists_every_method_and_merging_saves_work():
    result = runner.invoke(app, ["profile", "--all", "--backbone", "tiny-clip", "--batch", "1",
                                 "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["method"]: row for row in json.loads(result.stdout)}
    assert {"zeroshot", "full", "lora", "tempme", "tempme-full"} <= set(rows)
    assert rows["lora"]["video_gmacs"] == rows["zeroshot"]["video_gmacs"]  # LoRA folded
    assert rows["tempme"]["video_gmacs"] < rows["lora"]["video_gmacs"]
    assert rows["zeroshot"]["params_trainable"] == 0
    assert np.isnan(rows["zeroshot"]["seconds_per_step"])


def _peak_of_a_256_mib_block(hold_seconds: float) -> tuple[float, float]:
    with PeakMemory(torch.device("cpu")) as baseline:
        torch.zeros(1).sum()
    with PeakMemory(torch.device("cpu")) as memory:
        block = torch.ones(64 * 2**20)  # 256 MiB of float32, touched
        block.sum()
        time.sleep(hold_seconds)
        del block
    return baseline.peak_mib, memory.peak_mib


def test_peak_memory_sees_a_short_lived_allocation_on_cpu():
    baseline, peak = _peak_of_a_256_mib_block(hold_seconds=0.0)
    assert peak >= baseline + 200


def test_peak_memory_falls_back_to_sampling_without_proc(monkeypatch):
    monkeypatch.setattr(profiling, "_reset_high_water_mark", lambda: False)
    baseline, peak = _peak_of_a_256_mib_block(hold_seconds=0.2)
    assert peak >= baseline + 200


def test_time_calls_warms_up_then_times_each_call():
    calls = []
    seconds = time_calls(lambda: calls.append(1), torch.device("cpu"), warmup=2, repeats=10)
    assert len(calls) == 12 and len(seconds) == 10 and all(s >= 0 for s in seconds)
    timing = Timing.of([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (timing.q1, timing.median, timing.q3) == (2.0, 3.0, 4.0)


def test_profile_markdown_table_has_a_row_per_method():
    result = runner.invoke(app, ["profile", "--method", "lora", "--backbone", "tiny-clip",
                                 "--batch", "1", "--device", "cpu", "--markdown"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[2].startswith("| method | video GFLOPs |")
    assert lines[4].startswith("| lora |") and len(lines) == 5
