"""suite report --pareto: a multi-objective study's front as a table and a plot, with the other
runs of its experiment and the paper's points (studies and runs logged without training)."""

import optuna
import pytest
from report_runs import figures, log_run, new_store
from typer.testing import CliRunner

from reports.pareto import pareto_report, published_points
from suite.cli import app
from suite.errors import ReportError

runner = CliRunner()
#: (val R-Sum, GFLOPs) of four trials: 0, 1 and 3 are on the front, 2 is dominated by 1.
TRIALS = [(150.0, 0.010), (170.0, 0.012), (160.0, 0.013), (180.0, 0.016)]
TAGS = {"method": "tempme", "dataset": "synthetic", "backbone": "tiny-clip",
        "select_on": "val"}


@pytest.fixture
def study_store(tmp_path):
    uri, client, experiment = new_store(tmp_path, "tvr-suite")
    log_run(client, experiment, {**TAGS, "method": "lora"}, {}, figures(19, 48, 63, 0.0164, 0))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="front", storage=storage,
                                directions=["maximize", "minimize"])
    study.set_metric_names(["val/t2v_rsum", "cost/video_gmacs"])
    study.set_user_attr("dataset", "synthetic")
    for i, (rsum, gmacs) in enumerate(TRIALS):
        trial = study.ask({"method.imgme_r": optuna.distributions.IntDistribution(0, 4)})
        run = log_run(client, experiment, {**TAGS, "sweep": "front", "trial": str(i)}, {},
                      {"test/t2v_rsum": rsum - 10, "cost/video_gmacs": gmacs})
        trial.set_user_attr("mlflow_run_id", run)
        study.tell(trial, [rsum, gmacs])
    return uri, storage, tmp_path


def test_the_front_table_lists_the_non_dominated_trials_by_cost(study_store):
    uri, storage, _ = study_store
    made = pareto_report("front", storage, uri)
    assert list(made.table["trial"]) == [0, 1, 3]
    assert list(made.table["cost/video_gmacs (min)"]) == [0.010, 0.012, 0.016]
    assert list(made.table["test R-Sum"]) == [140.0, 160.0, 170.0]
    kinds = made.points["kind"].value_counts().to_dict()
    assert kinds == {"front": 3, "trial": 1, "run": 1}  # no published points on synthetic
    assert "no published points" in made.caption
    assert "| trial |" in made.render("md")


def test_the_cli_writes_the_table_and_the_plot(study_store):
    uri, storage, folder = study_store
    result = runner.invoke(app, ["report", "--pareto", "front", "--storage", storage,
                                 "--tracking-uri", uri, "--out", str(folder / "out")])
    assert result.exit_code == 0, result.output
    written = {p.rsplit("/", 1)[-1] for p in result.stdout.split()}
    assert written == {"pareto-front.md", "pareto-front.png", "pareto-front.svg"}
    assert (folder / "out" / "pareto-front.png").stat().st_size > 10_000


def test_a_single_objective_or_missing_study_is_refused(study_store):
    uri, storage, _ = study_store
    optuna.create_study(study_name="one", storage=storage, direction="maximize")
    with pytest.raises(ReportError, match="one objective"):
        pareto_report("one", storage, uri)
    with pytest.raises(ReportError, match="no study"):
        pareto_report("nope", storage, uri)


def test_published_points_come_from_the_plans_of_the_dataset():
    points = published_points("msrvtt")
    assert points and all(p["kind"] == "paper" and p["gflops"] > 0 for p in points)
    assert any(p["label"] == "LoRA (ViT-B-32, paper)" for p in points)
    assert published_points("synthetic") == []
