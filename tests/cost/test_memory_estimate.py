"""suite.cost.memory and suite.job.resources: a run's peak memory estimated before anything is
allocated, set against a measured peak, and the check that refuses a run that would not fit."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch

from methods.registry import get
from suite.cost import memory
from suite.cost.memory import MemoryEstimate, Tower, estimate, model_shape, towers
from suite.data.cards import cards_dir, load_card
from suite.errors import UserError
from suite.job import engine, resources
from suite.job.config import apply_overrides, base_for, method_config

CPU = torch.device("cpu")
BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "memory_estimate.py"


def synthetic(method="lora", **overrides):
    """The synthetic card's run of ``method`` with ``overrides`` (dotted settings)."""
    return apply_overrides(base_for(method, "synthetic"), overrides)


def test_the_towers_come_from_the_open_clip_config():
    visual, text, size = towers("tiny-clip")
    assert visual == Tower(width=64, layers=6, heads=4, mlp_ratio=2.0, tokens=(48 // 8) ** 2 + 1)
    assert text == Tower(width=64, layers=4, heads=4, mlp_ratio=2.0, tokens=32)
    assert size == 48
    visual, text, size = towers("ViT-B-32")
    assert (visual.width, visual.layers, visual.heads, visual.tokens) == (768, 12, 12, 50)
    assert (text.width, text.layers, text.heads, text.tokens) == (512, 12, 8, 77)
    assert towers("RN50") is None  # a ResNet: no tokens to count


@pytest.mark.parametrize("method", ["zeroshot", "lora", "full", "tempme"])
def test_parameters_are_counted_on_the_meta_device_as_built(method, tiny_clip):
    config = synthetic(method)
    knobs = method_config(config)
    shape = model_shape(method, "tiny-clip", config.frames, knobs)
    model = get(method).build(tiny_clip, knobs, config.frames, "tiny-clip")
    assert shape.params_total == sum(p.numel() for p in model.parameters())
    assert shape.params_trainable == sum(p.numel() for p in model.trainable_parameters())
    assert shape.visual_trains is shape.text_trains is (method != "zeroshot")


def test_a_merging_encoder_counts_the_tokens_it_keeps():
    config = synthetic("tempme")
    shape = model_shape("tempme", "tiny-clip", config.frames, method_config(config))
    assert shape.visual_blocks is not None and len(shape.visual_blocks) == 6
    lora = model_shape("lora", "tiny-clip", config.frames, method_config(synthetic()))
    assert lora.visual_blocks is None  # every block: one sequence of 37 tokens per frame
    merged = sum(s * t for s, t in shape.blocks(1, config.frames))
    assert merged < sum(s * t for s, t in lora.blocks(1, config.frames)) == 6 * 12 * 37


def test_the_estimate_grows_with_batch_and_frames_and_counts_what_trains():
    shape = model_shape("lora", "tiny-clip", 12, method_config(synthetic()))
    small = estimate(shape, batch=8, frames=12, words=32, eval_batch=8)
    assert isinstance(small, MemoryEstimate) and small.training > small.parts["weights"]
    double = estimate(shape, batch=16, frames=12, words=32, eval_batch=8)
    assert double.parts["activations"] == pytest.approx(2 * small.parts["activations"], rel=0.01)
    longer = estimate(shape, batch=8, frames=24, words=32, eval_batch=8)
    assert longer.parts["activations"] > 1.9 * small.parts["activations"]
    assert estimate(shape, 8, 12, 32, 8, precision="bf16").parts["activations"] < \
        small.parts["activations"]
    # eval batch alone moves the evaluation peak, not the training one
    wide = estimate(shape, 8, 12, 32, eval_batch=512)
    assert wide.training == small.training and wide.evaluation > small.evaluation
    assert wide.phase == "evaluation" and wide.peak == wide.evaluation
    frozen = estimate(shape, 8, 12, 32, 8, trains=False)  # zero-shot: nothing trains
    assert frozen.training is None and frozen.peak == frozen.evaluation
    full = model_shape("full", "tiny-clip", 12, method_config(synthetic("full")))
    full_estimate = estimate(full, 8, 12, 32, 8)
    assert full_estimate.parts["optimizer"] == 2 * 4 * full.params_trainable  # AdamW's moments
    assert full_estimate.training > small.training


def load_benchmark():
    spec = importlib.util.spec_from_file_location("memory_estimate", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_estimate_is_within_a_sane_factor_of_a_measured_training_peak():
    """Two real training steps of tiny LoRA at 16 videos of 12 frames (a second or two),
    measured as suite.cost.profiling.PeakMemory measures; the estimate is within 2x."""
    row = load_benchmark().measure("lora", "tiny-clip", 12, 16, configure=False)
    ratio = row["estimated_mib"] / row["measured_mib"]
    assert 0.5 < ratio < 2.0, row


# -- the check ----------------------------------------------------------------------------

def fake_memory(monkeypatch, size):
    monkeypatch.setattr(resources, "available_memory",
                        lambda device: (size, "available host memory"))


def test_a_normal_run_is_refused_when_little_memory_is_free(monkeypatch):
    fake_memory(monkeypatch, 64 * 2**20)
    config = synthetic()
    with pytest.raises(UserError) as refused:
        engine.check(config)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("estimated peak memory ") and "exceeds the 64 MiB of available " \
        "host memory" in message
    for what in ("--batch-size", "--frames", "train.eval_batch_size", "train.memory_check=false"):
        assert what in message
    # the named option turns the check off
    engine.check(apply_overrides(config, {"train.memory_check": False}))
    fake_memory(monkeypatch, 64 * 2**30)
    engine.check(config)


def test_more_processes_on_one_host_share_its_memory(monkeypatch):
    config = synthetic()
    knobs, card = method_config(config), load_card("synthetic")
    one = resources.run_estimate(config, knobs, card, CPU).peak
    fake_memory(monkeypatch, int(one * 1.5))
    resources.check_memory(config, knobs, card, CPU)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(UserError, match=r"iB for 2 processes \(training"):
        resources.check_memory(config, knobs, card, CPU)
    # each of 4 processes takes a quarter of the batch
    assert resources.run_estimate(config, knobs, card, CPU, world=4).peak < one


def test_the_available_memory_is_the_cgroups_when_lower(monkeypatch):
    monkeypatch.setattr(memory, "cgroup_headroom", lambda: 2**20)
    assert memory.available_memory(CPU) == (2**20, "memory left under this process's cgroup "
                                                   "limit")
    monkeypatch.setattr(memory, "cgroup_headroom", lambda: None)
    size, what = memory.available_memory(CPU)
    assert size > 0 and what == "available host memory"


def write(folder, **files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".", 1)).write_text(text)


def test_cgroup_headroom_reads_v2_and_v1_and_takes_the_least_up_the_tree(tmp_path):
    write(tmp_path / "v2" / "job" / "step", memory_max="max\n", memory_current="100\n")
    write(tmp_path / "v2" / "job", memory_max="1000\n", memory_current="600\n",
          memory_stat="anon 400\ninactive_file 50\n")
    assert memory.cgroup_headroom(tmp_path / "v2", "0::/job/step\n") == 1000 - 600 + 50
    write(tmp_path / "v1" / "memory" / "job", memory_limit_in_bytes=f"{2**63 - 4096}\n",
          memory_usage_in_bytes="10\n")
    write(tmp_path / "v1" / "memory", memory_limit_in_bytes="5000\n",
          memory_usage_in_bytes="3000\n", memory_stat="total_inactive_file 100\n")
    assert memory.cgroup_headroom(tmp_path / "v1", "4:memory:/job\n1:cpu:/\n") == 2100
    assert memory.cgroup_headroom(tmp_path / "none", "0::/\n") is None  # no limit anywhere


def test_frames_above_the_cards_max_frames_are_refused():
    card = dataclasses.replace(load_card("synthetic"), max_frames=16)
    resources.check_frames(synthetic(frames=16), card)
    with pytest.raises(UserError, match="frames 17 exceeds what synthetic's videos give "
                                        r"\(max_frames 16 in its card\)"):
        resources.check_frames(synthetic(frames=17), card)
    with pytest.raises(UserError, match="max_frames must be a positive whole number"):
        resources.check_frames(synthetic(), dataclasses.replace(card, max_frames="many"))
    resources.check_frames(synthetic(frames=1000), load_card("synthetic"))  # no cap: any


def test_a_card_of_short_videos_caps_frames_before_the_run(tmp_path, monkeypatch):
    text = (cards_dir() / "synthetic.toml").read_text().replace('name = "synthetic"',
                                                                  'name = "short"')
    (tmp_path / "short.toml").write_text(text.replace("frames = 12\n", "frames = 12\n"
                                                      "max_frames = 8\n", 1))
    monkeypatch.setenv("SUITE_CARDS_PATH", str(tmp_path))
    with pytest.raises(UserError, match="frames 12 exceeds what short's videos give"):
        engine.check(base_for("lora", "short"))
    engine.check(apply_overrides(base_for("lora", "short"), {"frames": 8}))
