"""suite sweep with several objectives: a Pareto front of tiny TempMe runs, and a GFLOPs budget
that refuses trials before they train."""

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from tiny_runs import json_summary
from typer.testing import CliRunner

from suite.cli import app
from suite.cost.profiling import InferenceCost
from suite.errors import UserError
from suite.job import engine
from suite.orchestrate import sweep

runner = CliRunner()
TINY = ["--set", "pretrained=null", "--set", "train.epochs=1", "--set", "train.batch_size=4",
        "--set", "data.num_train=16", "--set", "data.num_val=4", "--set", "data.num_test=8"]


@pytest.fixture
def stores(tmp_path, monkeypatch):
    """MLflow and Optuna stores of this test; the inference timing is skipped, the counts
    (what the objective reads) are kept."""
    from suite.cost.profiling import count_costs

    def counts_only(model, frames, image_size, words, *args, vocab=49408, **kwargs):
        c = count_costs(model, frames, image_size, words, vocab)
        return InferenceCost(c.video_gmacs, c.text_gmacs, c.output_tokens, c.params_total,
                             0, 0, 0, 0)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(engine, "measure_inference", counts_only)
    return f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"


def pareto_sweep(stores, *args):
    uri, storage = stores
    result = runner.invoke(app, ["sweep", "--method", "tempme", "--objective", "r_sum",
                                 "--objective", "gflops", *args, *TINY, "--tracking-uri", uri,
                                 "--storage", storage, "--json"])
    assert result.exit_code == 0, result.output
    return json_summary(result.stdout), result.output


def dominates(a, b):
    """``a`` at least as good as ``b`` on both (R-Sum up, GFLOPs down) and better on one."""
    return a[0] >= b[0] and a[1] <= b[1] and tuple(a) != tuple(b)


@pytest.mark.slow
def test_a_pareto_sweep_names_its_objectives_and_keeps_a_non_dominated_front(stores):
    uri, storage = stores
    summary, _ = pareto_sweep(stores, "--trials", "4", "--study", "front")
    study = optuna.load_study(study_name="front", storage=storage)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE,
                                optuna.study.StudyDirection.MINIMIZE]
    assert study.metric_names == ["val/t2v_rsum", "cost/video_gmacs"]
    assert summary["objectives"] == ["val/t2v_rsum:max", "cost/video_gmacs:min"]
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    front = [tuple(t["values"]) for t in summary["front"]]
    assert len(done) == 4 and front
    assert not any(dominates(t.values, f) for t in done for f in front)
    for t in done:  # the GFLOPs objective is the run's logged count
        run = MlflowClient(uri).get_run(t.user_attrs["mlflow_run_id"])
        assert t.values[1] == pytest.approx(run.data.metrics["cost/video_gmacs"])
        assert t.values[0] == pytest.approx(run.data.metrics["val/t2v_rsum"])
        assert {"method.clip_groups", "method.clip_first_layer"} <= set(t.params)


@pytest.mark.slow
def test_a_trial_over_the_budget_is_refused_without_training(stores, monkeypatch):
    uri, storage = stores
    counted = []
    real = sweep.counted_costs

    def count(config):
        counted.append(real(config))
        return counted[-1]

    monkeypatch.setattr(sweep, "counted_costs", count)
    monkeypatch.setattr(engine.Trainer, "fit", lambda *a: pytest.fail("a refused trial trained"))
    result = runner.invoke(app, ["sweep", "--method", "tempme", "--objective", "r_sum",
                                 "--objective", "gflops", "--budget", "gflops<=0.001",
                                 "--trials", "2", "--study", "tight", *TINY,
                                 "--tracking-uri", uri, "--storage", storage])
    assert result.exit_code == 1  # every trial refused
    assert "refused, not trained: gflops" in result.output
    study = optuna.load_study(study_name="tight", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
    assert [t.user_attrs["over_budget"] for t in study.trials] == [
        pytest.approx(c.video_gmacs) for c in counted]
    experiment = MlflowClient(uri).get_experiment_by_name("tvr-suite")
    assert experiment is None or not MlflowClient(uri).search_runs(
        [experiment.experiment_id], "tags.sweep = 'tight'")


def test_objectives_and_budgets_parse_with_directions():
    assert sweep.Objective.parse("r_sum") == sweep.Objective("val/t2v_rsum", "maximize")
    assert sweep.Objective.parse("gflops") == sweep.Objective("cost/video_gmacs", "minimize")
    assert sweep.Objective.parse("val/t2v_MnR:min").direction == "minimize"
    assert sweep.Budget.parse("gflops<=0.08").limit == 0.08
    for bad in ("test/t2v_rsum:max", "val/t2v_MdR", "r_sum:up"):
        with pytest.raises(UserError):
            sweep.Objective.parse(bad)
    for bad in ("gflops<0.08", "tokens<=3", "gflops<=x"):
        with pytest.raises(UserError):
            sweep.Budget.parse(bad)
    two = (sweep.Objective.parse("r_sum"), sweep.Objective.parse("gflops"))
    assert sweep.check_objectives(two, None, "none") == "nsga2"
    assert sweep.check_objectives(two, "tpe", "none") == "tpe"
    assert sweep.check_objectives(sweep.DEFAULT_OBJECTIVES, None, "median") == "tpe"
    with pytest.raises(UserError, match="pruner"):
        sweep.check_objectives(two, None, "median")


def test_a_single_objective_study_names_its_metric(tmp_path):
    study = sweep.open_study("one", str(tmp_path / "o.journal"), "tome", "synthetic")
    assert study.metric_names == ["val/t2v_rsum"]
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE]
    with pytest.raises(UserError, match="not a sweep"):
        sweep.open_study("one", str(tmp_path / "o.journal"), "tome", "synthetic",
                         objectives=(sweep.Objective.parse("r_sum"),
                                     sweep.Objective.parse("gflops")))
