"""suite sweep: Optuna studies whose trials are tiny suite runs, read back from MLflow."""


import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from tiny_runs import json_summary
from typer.testing import CliRunner

from suite.cli import app
from suite.cost.profiling import InferenceCost
from suite.data.cards import load_card
from suite.job import engine
from suite.job.config import apply_overrides, base_for
from suite.orchestrate import sweep

runner = CliRunner()
TINY = ["--set", "pretrained=null", "--set", "train.epochs=1", "--set", "train.batch_size=4",
        "--set", "data.num_train=8", "--set", "data.num_val=4", "--set", "data.num_test=8",
        "--set", "train.eval_batch_size=8"]


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """One MLflow store for the module (creating one takes seconds); tests tell their runs
    apart by study name, which is the test's name."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def stores(mlflow_uri, tmp_path, monkeypatch):
    """The MLflow store and an Optuna store of this test; the inference timing (not under
    test) is skipped so that each run takes a few seconds."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(engine, "measure_inference",
                        lambda *args, **kwargs: InferenceCost(0, 0, 0, 0, 0, 0, 0, 0))
    return mlflow_uri, f"sqlite:///{tmp_path / 'optuna.db'}"


def sweep_cli(stores, *args):
    uri, storage = stores
    return runner.invoke(app, ["sweep", "--method", "lora", *args, *TINY, "--tracking-uri", uri,
                               "--storage", storage, "--json"])


def summary_of(result):
    assert result.exit_code == 0, result.output
    return json_summary(result.stdout)


def sweep_runs(uri, study):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tvr-suite")
    return client.search_runs([experiment.experiment_id], f"tags.sweep = '{study}'")


@pytest.mark.slow
def test_sweep_maximises_validation_and_resumes(stores):
    uri, storage = stores
    summary = summary_of(sweep_cli(stores, "--trials", "2"))
    assert summary["study"] == "lora-synthetic"
    assert (summary["trials"], summary["complete"], summary["failed"]) == (2, 2, 0)
    runs = sweep_runs(uri, "lora-synthetic")
    assert sorted(r.data.tags["trial"] for r in runs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in runs)
    val = {r.info.run_id: r.data.metrics["val/t2v_rsum"] for r in runs}
    assert summary["best_value"] == pytest.approx(max(val.values()))
    assert val[summary["best_mlflow_run_id"]] == pytest.approx(summary["best_value"])
    assert set(summary["best_params"]) == {"method.rank", "train.lr"}

    study = optuna.load_study(study_name="lora-synthetic", storage=storage)
    card_lr = load_card("synthetic").train["lr"]  # searched from / 10 to x 10
    for trial in study.trials:
        assert trial.value == pytest.approx(val[trial.user_attrs["mlflow_run_id"]])
        # per-epoch validation R-Sum reported to Optuna (what a pruner reads), step = epochs
        assert trial.intermediate_values == {1: pytest.approx(trial.value)}
        assert card_lr / 10 <= trial.params["train.lr"] <= card_lr * 10

    resumed = summary_of(sweep_cli(stores, "--trials", "1"))
    assert (resumed["trials"], resumed["complete"]) == (3, 3)
    assert len(optuna.load_study(study_name="lora-synthetic", storage=storage).trials) == 3
    assert len(sweep_runs(uri, "lora-synthetic")) == 3


def test_failing_trials_do_not_end_the_sweep(stores, monkeypatch):
    uri, storage = stores
    fit, draw = engine.Trainer.fit, sweep.draw
    calls = []

    def fit_failing_first(self, *args):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom\nsecond line")
        return fit(self, *args)

    def draw_bad_knob_in_trial_1(trial, method, base_lr, *where):
        overrides = draw(trial, method, base_lr, *where)
        if trial.study.study_name == "failing" and trial.number == 1:
            overrides["method.nope"] = 1  # an invalid combination: a UserError in the run
        return overrides

    monkeypatch.setattr(engine.Trainer, "fit", fit_failing_first)
    monkeypatch.setattr(sweep, "draw", draw_bad_knob_in_trial_1)
    result = sweep_cli(stores, "--trials", "3", "--study", "failing")
    summary = summary_of(result)
    assert (summary["complete"], summary["failed"], summary["best_trial"]) == (1, 2, 2)
    assert "trial 0 failed: RuntimeError: boom" in result.output
    assert "second line" not in result.output and "Traceback" not in result.output
    assert "trial 1 failed: UserError: method 'lora' has no option nope" in result.output

    trials = optuna.load_study(study_name="failing", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    runs = {r.data.tags["trial"]: r.info.status for r in sweep_runs(uri, "failing")}
    assert runs == {"0": "FAILED", "2": "FINISHED"}  # the bad knob failed before a run opened


def test_every_trial_failing_exits_1(stores, monkeypatch):
    def broken(self, *args):
        raise RuntimeError("boom")

    monkeypatch.setattr(engine.Trainer, "fit", broken)
    result = sweep_cli(stores, "--trials", "1", "--study", "all-fail")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("error: all 1 trials failed")


def test_ctrl_c_exits_130_and_keeps_the_study(stores, monkeypatch):
    uri, storage = stores

    def interrupted(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.Trainer, "fit", interrupted)
    assert sweep_cli(stores, "--trials", "2", "--study", "ctrl-c").exit_code == 130
    trials = optuna.load_study(study_name="ctrl-c", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.FAIL]
    assert [r.info.status for r in sweep_runs(uri, "ctrl-c")] == ["KILLED"]


@pytest.mark.parametrize("args, fragment", [
    (["--method", "nope", "--trials", "1"], "unknown method 'nope'; valid:"),
    (["--method", "lora", "--dataset", "nope", "--trials", "1"], "unknown dataset 'nope'"),
    (["--method", "lora", "--trials", "1", "--set", "train.nope=1"], "unknown setting"),
    (["--method", "lora", "--trials", "1", "--set", "method.rnak=4"], "no option rnak"),
    (["--method", "lora", "--trials", "1", "--set", "train.lr=1e-3"], "searched by the sweep"),
    (["--method", "lora", "--trials", "1", "--set", "select_on=test"], "selects on validation"),
    (["--method", "zeroshot", "--trials", "1"], "has nothing to search"),
    (["--method", "full", "--trials", "1", "--set", "train.lr_pretrained=1e-4"],
     "searched by the sweep"),
    (["--method", "lora"], "--method and --trials are required"),
    (["--method", "lora", "--trials", "1", "--storage", "foo://bar"], "cannot open Optuna"),
    (["--method", "lora", "--trials", "1", "--storage", "no/such/folder/x.journal"],
     "cannot open Optuna"),
    (["--method", "lora", "--trials", "1", "--pruner", "nope"],
     "unknown --pruner 'nope'; valid: none, median, hyperband"),
    (["--method", "lora", "--trials", "1", "--seed", "-1"], "--seed -1 is negative"),
])
def test_user_errors_exit_2_before_any_trial(args, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["sweep", *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no optuna.db, no mlflow.db


def test_a_study_of_another_method_is_refused(stores):
    uri, storage = stores
    optuna.create_study(study_name="mine", storage=storage, direction="maximize")
    optuna.load_study(study_name="mine", storage=storage).set_user_attr("method", "tempme")
    result = sweep_cli(stores, "--trials", "1", "--study", "mine")
    assert result.exit_code == 2 and "not a sweep of lora on synthetic" in result.output


def test_an_untrained_run_still_reports_its_validation_figures(stores):
    uri, _ = stores
    overrides = {"pretrained": None, "data.num_train": 8, "data.num_val": 4, "data.num_test": 8,
                 "train.eval_batch_size": 8}
    config = apply_overrides(base_for("zeroshot", "synthetic"), overrides)
    result = engine.run(config, uri, show_progress=False, tags={"sweep": "s"})
    assert result.best_epoch is None
    run = MlflowClient(uri).get_run(result.run_id)
    assert run.data.metrics["val/t2v_rsum"] == pytest.approx(result.selection["t2v_rsum"])
    assert run.data.tags["sweep"] == "s"


@pytest.mark.parametrize("method, rates", [
    ("lora", {"train.lr"}),
    ("full", {"train.lr_pretrained"}),  # every trainable weight is a pretrained one
    ("tempme-full", {"train.lr", "train.lr_pretrained"}),
])
def test_a_sweep_searches_the_learning_rates_that_reach_the_trained_weights(method, rates):
    from methods.registry import get
    from suite.job.config import TrainConfig

    train = TrainConfig(lr=1e-3, lr_pretrained=1e-5)
    drawn = sweep.draw(optuna.create_study().ask(), get(method), train)
    assert {k for k in drawn if k.startswith("train.")} == rates
    bounds = {"train.lr": (1e-4, 1e-2), "train.lr_pretrained": (1e-6, 1e-4)}
    for name in rates:
        assert bounds[name][0] <= drawn[name] <= bounds[name][1]


def test_trials_keep_no_epoch_checkpoints(stores, monkeypatch):
    written = []
    monkeypatch.setattr(engine.checkpoint, "save_atomic", lambda state, path: written.append(path))
    summary_of(sweep_cli(stores, "--trials", "1", "--study", "no-checkpoints"))
    assert written == []  # plain runs do write them: tests/test_resume.py
