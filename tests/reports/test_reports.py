"""Reports: tables and plots from a real MLflow SQLite store of runs logged directly."""

import io
import math
import subprocess
import sys
from html.parser import HTMLParser

import pandas as pd
import pytest
from tiny_runs import json_summary
from typer.testing import CliRunner

from reports.runs import load_runs
from reports.tables import comparison_table, render
from suite.cli import app

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

BASE = {"test/t2v_MdR": 5.0, "test/t2v_MnR": 20.0, "cost/output_tokens": 97.0,
        "cost/params_trainable": 507648.0, "cost/training_peak_mib": 800.0}
# (method, selected_on, seed, R1, R5, R10, GMACs, videos/s, status)
RUNS = [
    ("tempme", "val", 1, 10.0, 40.0, 60.0, 0.0123, 100.0, "FINISHED"),
    ("tempme", "val", 2, 12.0, 44.0, 64.0, 0.0123, 120.0, "FINISHED"),
    ("lora", "val", 1, 8.0, 38.0, 54.0, 0.02, 80.0, "FINISHED"),
    ("lora", "test", 1, 9.0, 41.0, 55.0, 0.02, 81.0, "FINISHED"),
    ("full", "val", 1, 50.0, 50.0, 50.0, 0.02, 70.0, "FAILED"),
]
SWEEP_TRIAL = ("tempme", "val", 3, 90.0, 90.0, 90.0, 0.0123, 70.0, "FINISHED")


def html_rows(text: str) -> list[list[str]]:
    """Cell texts of every table row, with the standard library's HTML parser."""
    rows: list[list[str]] = []

    class Cells(HTMLParser):
        inside = False

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                rows.append([])
            elif tag in ("td", "th"):
                rows[-1].append("")
                self.inside = True

        def handle_endtag(self, tag):
            self.inside = self.inside and tag not in ("td", "th")

        def handle_data(self, data):
            if self.inside:
                rows[-1][-1] += data.strip()

    Cells().feed(text)
    return rows


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite store with experiment ``tvr-suite``: the runs of RUNS, logged without training."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("tvr-suite",
                                          artifact_location=(folder / "art").as_uri())
    for spec in [*RUNS, SWEEP_TRIAL]:
        method, selected_on, seed, r1, r5, r10, gmacs, speed, status = spec
        tags = {"method": method, "dataset": "synthetic", "backbone": "tiny-clip",
                "selected_on": selected_on}
        if spec is SWEEP_TRIAL:
            tags["sweep"] = "tempme-synthetic"
        run_id = client.create_run(experiment, tags=tags).info.run_id
        client.log_param(run_id, "train.seed", str(seed))
        metrics = {**BASE, "test/t2v_R1": r1, "test/t2v_R5": r5, "test/t2v_R10": r10,
                   "test/t2v_rsum": r1 + r5 + r10, "cost/video_gmacs": gmacs,
                   "cost/videos_per_second": speed}
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        client.set_terminated(run_id, status)
    return uri


def test_load_runs_keeps_finished_runs_outside_sweeps(store):
    runs = load_runs("tvr-suite", store)
    assert len(runs) == 4 and "full" not in set(runs["method"])
    assert len(load_runs("tvr-suite", store, sweeps=True)) == 5
    assert list(runs.columns[:8]) == ["method", "dataset", "backbone", "selected_on", "preset",
                                      "seed", "run_id", "start_time"]
    assert sorted(runs["seed"].tolist()) == [1, 1, 1, 2]
    assert runs["test/t2v_rsum"].max() == pytest.approx(120.0)


def test_table_means_std_order_and_test_mark(store):
    table = comparison_table(load_runs("tvr-suite", store))
    assert list(zip(table["method"], table["selected_on"], strict=True)) == [
        ("lora", "val"), ("lora", "test"), ("tempme", "val")]
    tempme = table.iloc[2]
    assert tempme["n"] == 2
    assert tempme["R@1"] == pytest.approx(11.0) and tempme["R-Sum"] == pytest.approx(115.0)
    assert tempme["R-Sum std"] == pytest.approx(math.sqrt(50))
    assert tempme["videos/s"] == pytest.approx(110.0)
    assert math.isnan(table.iloc[0]["R-Sum std"])  # one run: no spread
    md = render(table, "md")
    assert "| synthetic | tiny-clip | tempme | 2 | 11.0 ± 1.4 |" in md
    assert "115.0 ± 7.1" in md and "0.0123 |" in md  # GFLOPs identical: no ± 0
    assert "| lora† | 1 | 9.0 |" in md and "† selected on test split (papers' practice)" in md
    assert "GFLOPs (MACs) = multiply-adds of the visual tower" in md
    assert "507,648" in md


def test_every_format(store):
    table = comparison_table(load_runs("tvr-suite", store))
    back = pd.read_csv(io.StringIO(render(table, "csv")))
    # no preset is an empty field (NaN when read back), not "-" or "None"
    pd.testing.assert_frame_equal(back, table.assign(preset=math.nan), check_dtype=False)
    assert back.loc[2, "R-Sum"] == 115.0 and back.loc[2, "R-Sum std"] == pytest.approx(50 ** 0.5)
    latex = render(table, "latex")
    assert r"\begin{tabular}" in latex and r"\end{tabular}" in latex
    assert r"115.0 $\pm$ 7.1" in latex and r"lora$^\dagger$" in latex
    assert all(line.count("&") == 14 for line in latex.splitlines() if line.endswith(r"\\"))
    rows = html_rows(render(table, "html"))
    assert len(rows) == 4 and all(len(row) == 15 for row in rows)
    assert rows[0][:5] == ["dataset", "backbone", "method", "n", "R@1"]
    assert rows[2][2] == "lora†" and rows[3][2:4] == ["tempme", "2"]
    assert rows[3][9] == "115.0 ± 7.1" and rows[3][-1] == "800"


def test_cli_writes_table_and_png(store, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["report", "--tracking-uri", store, "--format", "latex",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    printed = result.stdout.split()
    assert printed == [str(out / "report.tex"), str(out / "rsum_vs_gflops_synthetic_tiny-clip.png")]
    png = (out / "rsum_vs_gflops_synthetic_tiny-clip.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 1000
    from matplotlib.image import imread

    assert imread(out / "rsum_vs_gflops_synthetic_tiny-clip.png").ndim == 3
    assert r"\toprule" in (out / "report.tex").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["report.tex",
                                                     "rsum_vs_gflops_synthetic_tiny-clip.png"]


def test_cli_prints_markdown_by_default(store):
    result = runner.invoke(app, ["report", "--tracking-uri", store])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("| dataset | backbone | method | n | R@1 |")


@pytest.mark.parametrize("args, fragment", [
    (["--experiment", "nope"], "unknown experiment 'nope'; valid: Default, tvr-suite"),
    (["--experiment", "Default"], "experiment 'Default' has no FINISHED runs"),
    (["--format", "bogus"], "unknown --format 'bogus'; valid: md, latex, csv, html"),
])
def test_user_errors(store, args, fragment):
    line = one_line_error(runner.invoke(app, ["report", "--tracking-uri", store, *args]))
    assert fragment in line


def test_missing_store_is_an_error_not_a_new_database(tmp_path):
    missing = tmp_path / "none.db"
    line = one_line_error(runner.invoke(app, ["report", "--tracking-uri", f"sqlite:///{missing}"]))
    assert "no MLflow store at" in line and not missing.exists()


@pytest.mark.slow
@pytest.mark.subprocess
def test_reports_does_not_import_the_engine_or_methods():
    """Reports read MLflow; of the suite they use only its error types and atomic writer."""
    allowed = ("suite", "suite.errors", "suite.common", "suite.common.files")
    code = ("import sys, reports.runs, reports.tables, reports.plots, reports.document, "
            "reports.html, reports.plan_runs; "
            "print([m for m in sys.modules if m.split('.')[0] in ('suite', 'methods', 'tempme')"
            f" and m not in {allowed!r} or m == 'torch'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.slow
def test_end_to_end_run_then_report(tmp_path, monkeypatch):
    """A real tiny `suite run`, then `suite report` on the same store finds its test R-Sum."""
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tiny = ["--pretrained", "none", "--epochs", "1", "--batch-size", "4",
            "--set", "data.num_train=8", "--set", "data.num_val=4", "--set", "data.num_test=8",
            "--set", "train.eval_batch_size=8"]
    ran = runner.invoke(app, ["run", "--method", "lora", *tiny, "--tracking-uri", store,
                              "--json"])
    assert ran.exit_code == 0, ran.output
    summary = json_summary(ran.stdout)
    result = runner.invoke(app, ["report", "--tracking-uri", store, "--format", "csv"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout))
    row = table[table["method"] == "lora"].iloc[0]
    assert row["n"] == 1 and row["selected_on"] == "val" and row["backbone"] == "tiny-clip"
    assert row["R-Sum"] == pytest.approx(summary["test"]["t2v_rsum"])
    assert row["GFLOPs (MACs)"] > 0 and row["trainable params"] > 0


def test_labels_of_points_at_the_same_spot_are_stacked():
    import pandas as pd

    from reports.columns import GFLOPS, RSUM
    from reports.plots import label_offsets

    points = pd.DataFrame({GFLOPS: [1.0, 1.01, 2.0], RSUM: [50.0, 50.1, 90.0]})
    assert label_offsets(points) == [(5, 5), (5, -7), (5, 5)]


def test_runs_with_different_settings_are_not_averaged(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("lrs", artifact_location=(tmp_path / "a").as_uri())
    # (method, lr, seed, device, R-Sum): devices and seeds repeat a setting, lr changes it.
    for method, lr, seed, device, rsum in [("tempme", "0.0001", 1, "cpu", 100.0),
                                           ("tempme", "0.0001", 2, "cuda", 110.0),
                                           ("tempme", "0.001", 1, "cpu", 150.0),
                                           ("lora", "0.0001", 1, "cpu", 90.0)]:
        tags = {"method": method, "dataset": "synthetic", "backbone": "tiny-clip",
                "selected_on": "val"}
        run_id = client.create_run(experiment, tags=tags).info.run_id
        for key, value in {"train.lr": lr, "train.seed": str(seed), "device": device}.items():
            client.log_param(run_id, key, value)
        client.log_metric(run_id, "test/t2v_rsum", rsum)
        client.set_terminated(run_id, "FINISHED")
    table = comparison_table(load_runs("lrs", uri))
    rows = list(zip(table["method"], table["setting"], table["n"], table["R-Sum"], strict=True))
    assert rows == [("lora", "", 1, 90.0), ("tempme", "train.lr=0.0001", 2, 105.0),
                    ("tempme", "train.lr=0.001", 1, 150.0)]
    md = render(table, "md")
    assert md.splitlines()[0].startswith("| dataset | backbone | method | setting | n |")
    assert "| synthetic | tiny-clip | tempme | train.lr=0.001 | 1 |" in md


def test_preset_and_skipped_columns_appear_only_when_a_run_has_them():
    from reports.columns import SKIPPED

    def run(method, preset, skipped, seed):
        return {"method": method, "dataset": "msrvtt", "backbone": "ViT-B-32",
                "selected_on": "test" if preset != "None" else "val", "preset": preset,
                "seed": seed, "run_id": f"{method}{seed}", "start_time": seed, "params": "{}",
                "test/t2v_rsum": 100.0 + seed, "data/test_skipped_videos": skipped}

    plain = pd.DataFrame([run("lora", "None", 0, 1), run("lora", "None", 0, 2)])
    text = render(comparison_table(plain), "md")
    assert "preset" not in text.splitlines()[0] and SKIPPED not in text
    mixed = pd.DataFrame([run("lora", "None", 0, 1), run("tempme", "tempme-official", 3, 1)])
    lines = render(comparison_table(mixed), "md").splitlines()
    assert "| preset |" in lines[0] and f"| {SKIPPED} |" in lines[0]
    tempme = next(line for line in lines if line.startswith("| msrvtt | ViT-B-32 | tempme†"))
    assert "| tempme-official |" in tempme and tempme.rstrip().endswith("| 3 |")
    assert any("counts as a miss" in line for line in lines)


def test_summation_noise_is_no_spread_but_a_real_difference_is():
    """Multiply-add counts of one model summed in another order differ by ~1e-17: no ± then;
    DiffRate's searched costs differ for real and keep theirs; one run keeps NaN."""
    from reports.tables import without_rounding_noise

    noisy = pd.Series([0.107, 0.107 + 1.7e-17, 0.107])
    real = pd.Series([0.0747, 0.0751, 0.0755])
    std = pd.Series([noisy.std(), real.std(), float("nan")])
    mean = pd.Series([noisy.mean(), real.mean(), 1.0])
    cleaned = without_rounding_noise(std, mean)
    assert noisy.std() > 0 and cleaned[0] == 0.0
    assert cleaned[1] == pytest.approx(0.0004) and pd.isna(cleaned[2])
