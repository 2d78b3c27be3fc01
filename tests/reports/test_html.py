"""The HTML page and honest labels: what the title states, how the table reads, the plots
inside the page, defaults by value, plan captions from the runs shown, plan reports that match
no run, LaTeX escaping and clean CSV. (Rendering in a real browser: test_browser.py.)"""

from __future__ import annotations

import base64
import io
import re
import subprocess
from html.parser import HTMLParser
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
from report_runs import PLAN, log_plan
from typer.testing import CliRunner

from suite.cli import app

runner = CliRunner()


class Page(HTMLParser):
    """What a test reads of a page: title, header facts, table cells (text, classes, the
    decimal padding), images and notes."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.title = ""
        self.facts: dict[str, str] = {}
        self.cells: list[list[dict]] = []  # per body row: {"text", "classes", "pad"}
        self.headers: list[str] = []
        self.images: list[dict[str, str]] = []
        self.notes: list[str] = []
        self.links: list[str] = []
        self._open: list[str] = []
        self._target: dict | None = None
        self._fact = ""
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        self._open.append(tag)
        if tag == "tr" and "tbody" in self._open:
            self.cells.append([])
        elif tag == "td":
            self._target = {"text": "", "classes": attrs.get("class", "").split(), "pad": ""}
            self.cells[-1].append(self._target)
        elif tag == "th":
            self.headers.append("")
        elif tag == "span" and self._target is not None:
            self._target["pad"] += attrs.get("data-pad", "")
        elif tag == "img":
            self.images.append(attrs)
        elif tag == "a":
            self.links.append(attrs.get("href", ""))
        elif tag == "p" and "figcaption" in self._open:
            self.notes.append("")

    def handle_endtag(self, tag):
        if tag in ("td",):
            self._target = None
        if tag not in ("img", "br", "wbr", "meta") and tag in self._open:
            while self._open.pop() != tag:
                pass

    def handle_data(self, data):
        where = self._open[-1] if self._open else ""
        if where == "title":
            self.title += data
        elif where == "dt":
            self._fact = data
        elif where == "dd":
            self.facts[self._fact] = data
        elif self._target is not None:
            self._target["text"] += data
        elif "th" in self._open:
            self.headers[-1] += data
        elif "figcaption" in self._open and "p" in self._open and self.notes:
            self.notes[-1] += data


def report(store: str, *args: str) -> str:
    result = runner.invoke(app, ["report", "--tracking-uri", store, *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def column(page: Page, header: str) -> list[dict]:
    j = page.headers.index(header)
    return [row[j] for row in page.cells]


def row_of(page: Page, *texts: str) -> list[dict]:
    return next(r for r in page.cells if all(t in [c["text"] for c in r] for t in texts))


def test_the_page_says_what_was_compared_when_and_with_which_suite(comparison_store):
    page = Page(report(comparison_store, "--format", "html"))
    assert page.title == ("Experiment tvr-suite: synthetic with tiny-clip; msrvtt with ViT-B-32 "
                          "(suite protocol, preset tempme-official; seeds 0, 1, 2, 42)")
    assert page.facts["datasets"] == "synthetic, msrvtt"
    assert page.facts["backbones"] == "tiny-clip, ViT-B-32"
    assert page.facts["seeds"] == "0, 1, 2, 42"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", page.facts["date"])
    made_by = f"tvr-suite {metadata.version('tvr-suite')}"
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=Path(__file__).parent)
    if head.returncode == 0:  # a checkout (an installed wheel names no commit)
        made_by += f" (commit {head.stdout.strip()})"
    assert page.facts["made by"] == made_by


def test_the_page_is_self_contained_with_one_svg_plot_per_dataset_and_backbone(
        comparison_store):
    text = report(comparison_store, "--format", "html")
    assert text.startswith("<!DOCTYPE html>") and "<style" in text
    assert not re.search(r"<(script|link|iframe)\b", text) and "src=\"http" not in text
    page = Page(text)
    assert [img["alt"].split(":")[0] for img in page.images] == ["msrvtt, ViT-B-32",
                                                                 "synthetic, tiny-clip"]
    for img in page.images:
        prefix = "data:image/svg+xml;base64,"
        assert img["src"].startswith(prefix)
        svg = base64.b64decode(img["src"].removeprefix(prefix)).decode()
        assert "<svg" in svg and "</svg>" in svg
    assert any("GFLOPs (MACs) = multiply-adds" in note for note in page.notes)
    assert any(note.startswith("R@k: % of test captions") for note in page.notes)


def test_html_out_writes_the_page_alone(comparison_store, tmp_path):
    result = runner.invoke(app, ["report", "--tracking-uri", comparison_store, "--format",
                                 "html", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(tmp_path / "out" / "report.html")]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["report.html"]


def test_figures_line_up_and_the_best_of_each_column_is_marked(comparison_store):
    page = Page(report(comparison_store, "--format", "html"))
    r1 = column(page, "R@1")
    assert all("figure" in c["classes"] for c in r1)
    assert all("text" in c["classes"] for c in column(page, "method"))
    # every R@1 cell ends as wide as the widest "± std": the zero-shot row (one run) is padded
    zeroshot = row_of(page, "zeroshot")[page.headers.index("R@1")]
    assert zeroshot["text"] == "1.9" and zeroshot["pad"] == " ± 0.0"
    assert all(c["pad"] == "" for c in r1 if "±" in c["text"])
    # per dataset and backbone: synthetic's best R@1, msrvtt's best R@1 (one each)
    best = [c["text"] for c in r1 if "best" in c["classes"]]
    assert best == ["45.9", "21.4 ± 1.3"]
    mnr = [c["text"] for c in column(page, "MnR") if "best" in c["classes"]]
    assert mnr == ["31.5"]  # lower is better; msrvtt's two rows tie: none marked there


def test_the_setting_column_names_a_default_by_its_value(comparison_store):
    md = report(comparison_store)
    assert "| synthetic | tiny-clip | tempme | data.num_train=2000 | - | 3 |" in md
    assert "| synthetic | tiny-clip | tempme | data.num_train=500 | - | 2 |" in md
    assert "=-" not in md and "=default" not in md


def test_method_defaults_by_value_and_a_typed_default_is_the_same_setting():
    """Unset method options by the value the run used (TempMe's schedule: the backbone's);
    a run that typed the default value joins the runs that left it."""
    from reports.tables import comparison_table

    def run(seed, params):
        return {"method": "tempme", "dataset": "synthetic", "backbone": "tiny-clip",
                "selected_on": "val", "preset": "-", "seed": seed, "run_id": f"r{seed}",
                "start_time": seed, "params": params, "test/t2v_rsum": 100.0 + seed}

    runs = pd.DataFrame([run(1, '{"frames": "12"}'),
                         run(2, '{"frames": "12", "method.ratio_cross": "0.3"}'),
                         run(3, '{"frames": "12", "method.ratio_cross": "0.2"}')])
    table = comparison_table(runs)
    assert list(zip(table["setting"], table["n"], strict=True)) == [
        ("method.ratio_cross=0.2", 1), ("method.ratio_cross=0.3", 2)]


def test_the_plan_page_is_captioned_from_its_runs_not_the_plan_text(plan_store):
    page = Page(report(plan_store, "--plan", PLAN, "--dataset", "synthetic", "--format", "html"))
    assert page.title == (f"Plan {PLAN}: synthetic with tiny-clip (suite protocol; seeds 42)")
    assert "MSR-VTT" not in page.title and "ViT-B" not in page.title
    assert page.notes[0].startswith(f"Plan {PLAN} (ablation) run with --dataset synthetic: its "
                                    f"rows on synthetic with tiny-clip. The plan is written "
                                    f"for msrvtt, ViT-B-32, preset tempme-official")
    lora = row_of(page, "LoRA")
    assert all("baseline" in c["classes"] for c in lora)
    assert lora[page.headers.index("Δ R-Sum")]["text"] == "baseline"
    assert not any("baseline" in c["classes"] for c in row_of(page, "TempMe"))
    assert len(page.images) == 1 and "rsum_vs_gflops" not in "".join(page.notes)


def test_the_plan_markdown_keeps_its_shape_with_the_honest_caption(plan_store):
    md = report(plan_store, "--plan", PLAN, "--dataset", "synthetic")
    lines = md.splitlines()
    assert lines[0].startswith("| row | imgme_r | clip_layers |")
    assert lines[1].startswith("|:---|:---|") and lines[1].endswith("---:|")
    assert next(line for line in lines if line.startswith("Plan ")).startswith(
        f"Plan {PLAN} (ablation) run with --dataset synthetic: its rows on synthetic with "
        "tiny-clip.")


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_a_plan_report_that_matches_no_run_fails_and_names_the_runs_settings(tmp_path):
    store = log_plan(tmp_path, {"data.num_train": 64})
    line = one_line_error(runner.invoke(app, ["report", "--tracking-uri", store, "--plan",
                                              PLAN, "--dataset", "synthetic"]))
    assert "none of its 5 FINISHED runs" in line
    assert f"`suite report --plan {PLAN} --dataset synthetic --set data.num_train=64` " \
           "(5 runs)" in line
    line = one_line_error(runner.invoke(app, ["report", "--tracking-uri", store, "--plan",
                                              PLAN]))
    assert f"5 in experiment 'plan-{PLAN}-synthetic': " in line
    assert f"`suite report --plan {PLAN} --dataset synthetic`" in line
    both = report(store, "--plan", PLAN, "--dataset", "synthetic", "--set", "data.num_train=64")
    assert "| TempMe | 2 |" in both and "Not shown" not in both


def test_runs_of_other_settings_beside_matching_ones_are_named_in_a_note(tmp_path):
    log_plan(tmp_path)
    store = log_plan(tmp_path, {"data.num_train": 64}, rows={"LoRA"})
    md = report(store, "--plan", PLAN, "--dataset", "synthetic")
    assert (f"Not shown: runs of the plan made with other settings; `suite report --plan {PLAN} "
            f"--dataset synthetic --set data.num_train=64` (1 run).") in md


def test_latex_is_booktabs_with_every_special_character_escaped(comparison_store):
    latex = report(comparison_store, "--format", "latex")
    assert all(rule in latex for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    assert r"when n \textgreater{} 1" in latex and r"data.num\_train=2000" in latex
    assert r"lora$^\dagger$" in latex and r"19.0 $\pm$ 1.3" in latex
    body = latex.split("\n", 1)[1]  # after the "% needs booktabs" comment
    assert not re.search(r"[<>±†Δ]|(?<!\\)[_%#]", body)


def test_csv_has_plain_numbers_and_empty_fields_for_none():
    from reports.formats import csv

    table = pd.DataFrame({"method": ["lora"], "preset": ["None"], "setting": ["None"],
                          "R@1": [0.1 + 0.2], "R-Sum": [14.000000000000002], "n": [1]})
    text = csv(table)
    assert text.splitlines()[1] == "lora,,,0.3,14.0,1"
    assert "None" not in text


def test_csv_of_the_store_has_no_none(comparison_store):
    text = report(comparison_store, "--format", "csv")
    assert "None" not in text and "0000000" not in text
    back = pd.read_csv(io.StringIO(text))
    assert back["preset"].isna().sum() == 4 and (back["preset"] == "tempme-official").sum() == 2


def test_rows_link_to_their_mlflow_runs_on_a_tracking_server():
    from reports.about import About
    from reports.columns import Shown
    from reports.html import table_html

    shown = Shown(["method", "n", "R@1"], [["lora", "2", "10.0 ± 1.0"]], [], 2,
                  runs=[["0123456789abcdef", "fedcba9876543210"]])
    server = About("experiment x", (("synthetic", "tiny-clip"),),
                   tracking_uri="http://mlflow.example:5000/", experiment_id="7")
    page = Page(table_html(shown, server))
    assert page.headers[-1] == "MLflow runs"
    view = "?workflowType=machine_learning"  # MLflow 3's model-training view of the run
    assert page.links == [
        f"http://mlflow.example:5000/#/experiments/7/runs/0123456789abcdef{view}",
        f"http://mlflow.example:5000/#/experiments/7/runs/fedcba9876543210{view}"]
    local = About("experiment x", (("synthetic", "tiny-clip"),),
                  tracking_uri="sqlite:///mlflow.db", experiment_id="7")
    assert Page(table_html(shown, local)).links == []


@pytest.mark.parametrize("labels, numbered", [
    (["lora", "tempme", "zeroshot"], False),
    (["TempMe [method.ratio_cross=0.2, method.ratio_intra=0.05]", "LoRA (train.lr=0.01)",
      "Temporal modelling only"], True),
])
def test_plot_labels_stay_inside_the_figure_and_leave_the_axes_their_width(labels, numbered):
    from reports.columns import GFLOPS, RSUM
    from reports.plots import plots

    points = pd.DataFrame({"dataset": "synthetic", "backbone": "tiny-clip", "label": labels,
                           "selected_on": ["val", "test", "val"], GFLOPS: [0.0164, 0.0115, 0.016],
                           RSUM: [130.0, 141.0, 120.0], f"{RSUM} std": [1.0, 2.0, None]})
    figure = plots(points)[0].figure
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    box = figure.bbox
    axes = figure.axes[0]
    texts = list(axes.texts) + [t for legend in figure.legends for t in legend.get_texts()]
    for text in texts:
        extent = text.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1, text.get_text()
        assert box.y0 <= extent.y0 and extent.y1 <= box.y1, text.get_text()
    assert axes.get_window_extent(renderer).width > 0.75 * box.width
    marks = [t.get_text() for t in axes.texts]
    if numbered:
        assert marks == ["1", "2", "3"]
        key = [t.get_text() for t in figure.legends[0].get_texts()]
        assert key[:3] == [f"{i}  {label}" for i, label in
                           zip((1, 2, 3), [labels[0], labels[1] + "†", labels[2]], strict=True)]
    else:
        assert marks == ["lora", "tempme†", "zeroshot"] and not figure.legends
