"""Each fact once: whether a run trains, which settings do not change what a run computes,
TempMe's schedule knobs, the schedule check, the config sections and a method's resolved
config are each decided in one place, and every user of the fact agrees with it."""

import dataclasses
import tomllib

import pytest
import torch

from methods.registry import Method, discover, get
from suite.errors import UserError
from suite.job import engine
from suite.job.config import (
    NOT_COMPUTING,
    SECTIONS,
    RunConfig,
    apply_overrides,
    base_for,
    build,
    method_config,
    trains,
)
from suite.models.method import resolve_method_config
from suite.orchestrate.plans import DIGEST_IGNORES, PlannedRun, knob_value, plans_dir
from tempme.schedule import ScheduleError, TempMeSchedule


def planned(config: RunConfig) -> PlannedRun:
    return PlannedRun("plan", "row", "row", 0, config, "digest")


# -- does this run train? ------------------------------------------------------------------

@pytest.mark.parametrize("method, epochs, expected", [
    ("zeroshot", 5, False), ("lora", 5, True), ("lora", 0, False), ("full", 1, True)])
def test_one_predicate_says_whether_a_run_trains_and_its_users_agree(method, epochs, expected):
    from suite.orchestrate.estimate import training_steps

    config = build({"method": method, "train": {"epochs": epochs, "batch_size": 4}})
    assert trains(config) is expected
    assert engine.Job(config, *[None] * 8).trains is expected
    assert (training_steps(planned(config), None) > 0) is expected


@pytest.mark.parametrize("method", discover())
def test_a_method_declares_learning_rates_exactly_when_its_model_trains(method, tiny_clip):
    """What lets the one predicate read the method's declaration instead of a built model."""
    config = build({"method": method})
    model = get(method).build(tiny_clip, method_config(config), config.frames, config.backbone)
    assert bool(model.trainable_parameters()) == bool(get(method).learning_rates)


# -- settings that do not change what a run computes ------------------------------------------

CHANGED = {"experiment": "elsewhere", "device": "cpu", "data_root": "/elsewhere",
           "train.num_workers": 2, "train.eval_batch_size": 2, "trust_torchscript": True,
           "train.memory_check": False}


def test_the_settings_that_do_not_compute_are_one_tuple_of_real_settings():
    from reports.runs import not_setting

    assert set(CHANGED) == set(NOT_COMPUTING)
    assert set(NOT_COMPUTING) <= set(build({"method": "lora"}).flat())
    assert not_setting() == {"train.seed", *NOT_COMPUTING}
    assert tuple(k for k in NOT_COMPUTING if k != "trust_torchscript") == DIGEST_IGNORES


def test_the_plan_digest_ignores_the_settings_that_do_not_compute_and_nothing_else():
    base = build({"method": "lora"})
    first = base.digest(ignore=DIGEST_IGNORES)
    for key, value in CHANGED.items():
        same = apply_overrides(base, {key: value}).digest(ignore=DIGEST_IGNORES) == first
        assert same is (key != "trust_torchscript"), key  # kept: digests stay as they were
    for key, value in {"train.lr": 1e-3, "train.seed": 1, "method.rank": 4}.items():
        assert apply_overrides(base, {key: value}).digest(ignore=DIGEST_IGNORES) != first


# -- TempMe's schedule knobs --------------------------------------------------------------

def test_tempme_knobs_are_the_fields_of_its_schedule():
    from methods.tempme import SCHEDULE_FIELDS, ScheduleConfig

    names = tuple(f.name for f in dataclasses.fields(TempMeSchedule))
    assert names == SCHEDULE_FIELDS
    assert tuple(f.name for f in dataclasses.fields(ScheduleConfig)) == names
    assert tuple(TempMeSchedule().as_dict()) == names


def test_the_sweep_and_the_shipped_plans_use_tempme_knobs():
    import optuna

    from methods.tempme import SCHEDULE_FIELDS, TempMeConfig
    from suite.job.config import TrainConfig
    from suite.orchestrate import sweep

    drawn = sweep.draw(optuna.create_study().ask(), get("tempme"), TrainConfig())
    assert {k for k in drawn if k.startswith("method.")} <= {f"method.{k}"
                                                             for k in SCHEDULE_FIELDS}
    options = {f"method.{f.name}" for f in dataclasses.fields(TempMeConfig)}
    ablations = sorted(plans_dir().glob("tempme-ablation-*.toml"))
    assert ablations
    for path in ablations:
        knobs = tomllib.loads(path.read_text())["knobs"]
        assert {k for k in knobs if k.startswith("method.")} <= options, path.name


def test_a_plan_shows_a_knob_left_at_default_as_the_backbones_default_schedule():
    config = build({"method": "tempme"})  # tiny-clip, 12 frames: ClipMe layers 3, 4, 5
    shown = {k: knob_value(planned(config), f"method.{k}")
             for k in ("imgme_r", "clip_layers", "clip_groups", "ratio_cross", "clip_pos_embed")}
    assert shown == {"imgme_r": "2", "clip_layers": "[3,4,5]", "clip_groups": "[2,2,3]",
                     "ratio_cross": "0.3", "clip_pos_embed": "true"}


# -- the schedule check -------------------------------------------------------------------

@pytest.mark.parametrize("method, options, schedule", [
    ("tempme", {"clip_groups": [5, 2, 3]},
     TempMeSchedule(imgme_r=2, clip_layers=(3, 4, 5), clip_groups=(5, 2, 3))),
    ("tempme-full", {"clip_groups": [5, 2, 3]},
     TempMeSchedule(imgme_r=2, clip_layers=(3, 4, 5), clip_groups=(5, 2, 3))),
    ("tome", {"r": [1, 2]}, TempMeSchedule(imgme_r=(1, 2), clip_layers=(), clip_groups=())),
])
def test_every_merging_method_refuses_a_schedule_with_the_schedules_own_rule(
        method, options, schedule):
    with pytest.raises(ScheduleError) as direct:
        schedule.validate(12, 6)  # tiny-clip has 6 blocks
    with pytest.raises(UserError) as resolved:
        resolve_method_config(method, "tiny-clip", 12, options)
    assert str(resolved.value) == str(direct.value)


# -- the config sections ------------------------------------------------------------------

def test_one_section_map_names_settings_in_flat_overrides_and_errors():
    assert set(SECTIONS.values()) <= set(RunConfig.model_fields)
    config = build({"method": "lora", "method_options": {"rank": 4},
                    "data_options": {"num_train": 8}, "train": {"lr": 1e-3}})
    flat = config.flat()
    assert (flat["method.rank"], flat["data.num_train"], flat["train.lr"]) == (4, 8, 1e-3)
    assert apply_overrides(build({"method": "lora"}), flat) == config  # read back as written
    with pytest.raises(UserError, match=r"^bad setting data: must be a valid dictionary"):
        build({"method": "lora", "data_options": 3})


# -- a method's config, resolved once -----------------------------------------------------

def test_a_job_resolves_its_method_config_once_and_keeps_it(monkeypatch):
    from suite.data.cards import load_card
    from suite.job.distributed import SINGLE

    calls = []
    real = Method.make_config

    def counted(self, backbone, frames, overrides):
        calls.append(self.name)
        return real(self, backbone, frames, overrides)

    monkeypatch.setattr(Method, "make_config", counted)
    config = apply_overrides(base_for("zeroshot", "synthetic"), {
        "pretrained": None, "data.num_train": 8, "data.num_val": 4, "data.num_test": 8,
        "train.eval_batch_size": 8})
    knobs = engine.check(config)  # what engine.run does before preparing the job
    job = engine.prepare(config, knobs, load_card(config.dataset), torch.device("cpu"), False,
                         SINGLE)
    assert calls == ["zeroshot"] and job.knobs is knobs


def test_profiling_resolves_method_configs_as_a_run_does():
    from suite.cost.profiling import build_for_profile

    with pytest.raises(UserError, match="method 'lora' has no option rnak; valid: rank"):
        build_for_profile("lora", "tiny-clip", 4, torch.device("cpu"), {"rnak": 4})
    with pytest.raises(UserError, match="unknown backbone 'ViT-Q-99'"):
        resolve_method_config("lora", "ViT-Q-99", 4, {})
