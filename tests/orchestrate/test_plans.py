"""Benchmark plans: parsing (one line per mistake), expansion into resolved runs with stable
digests, the shipped plans, the dry run, and the plan report's table."""

import math
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from methods.registry import discover
from reports.plan import PlanRow, PlanSpec, plan_table, render_plan
from suite.cli import app
from suite.errors import UserError
from suite.orchestrate.plans import available, expand, knob_value, load_plan

runner = CliRunner()

TINY = """
description = "tiny"
experiment = "plan-tiny"
seeds = [0, 1]
baseline = "LoRA"
kind = "ablation"
knobs = ["method.rank", "frames"]
[defaults]
dataset = "synthetic"
set = { pretrained = "none", train.epochs = 1, train.batch_size = 4, data.num_train = 8 }
[[rows]]
label = "LoRA"
method = "lora"
reference = { source = "a paper, table 1, p. 2", rsum = 10.0, R1 = 1.5 }
[[rows]]
label = "TempMe"
method = "tempme"
grid = { method.ratio_cross = [0.1, 0.2] }
backbone_set."tiny-clip" = { method.clip_layers = [2, 3, 4] }
"""


def write(tmp_path, text, name="tiny.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_every_shipped_plan_loads_and_expands():
    assert {"synthetic-all", "tempme-msrvtt-b32", "tempme-msrvtt-b16",
            "tempme-ablation-components", "tempme-ablation-schedule"} <= set(available())
    for name in available():
        plan = load_plan(name)
        runs = expand(plan, check="config" if name == "synthetic-all" else "none")
        assert len(runs) == len(plan.seeds) * sum(
            math.prod(len(v) for v in row.grid.values()) for row in plan.rows)
        assert len({r.digest for r in runs}) == len(runs)  # every run distinct
        for reference in (row.reference for row in plan.rows if row.reference):
            assert reference.source and reference.figures()


def test_synthetic_all_covers_every_method_with_three_seeds():
    plan = load_plan("synthetic-all")
    assert sorted({row.method for row in plan.rows}) == discover()
    assert len(plan.seeds) == 3
    runs = expand(plan, check="none")
    assert {r.config.dataset for r in runs} == {"synthetic"}


def test_ablation_plans_run_on_the_embedded_default():
    """--dataset synthetic: the card's backbone and settings, no preset, the rows' tiny-clip
    settings; every config passes the run's checks (schedules fit the 6-block tiny CLIP)."""
    for name in ("tempme-ablation-components", "tempme-ablation-schedule"):
        plan = load_plan(name)
        runs = expand(plan, dataset="synthetic", check="config")
        assert {r.config.backbone for r in runs} == {"tiny-clip"}
        assert {r.config.preset for r in runs} == {None}
        assert runs[0].config.experiment == f"{plan.experiment}-synthetic"
        on_paper = expand(plan, check="none")
        assert {r.config.preset for r in on_paper} == {"tempme-official"}
        assert {r.config.backbone for r in on_paper} == {"ViT-B-32"}


def test_component_rows_are_built_from_the_schedule_knobs():
    plan = load_plan("tempme-ablation-components")
    runs = {r.row: r for r in expand(plan, check="none")}
    knobs = {row: [knob_value(run, k) for k in plan.knobs] for row, run in runs.items()}
    assert knobs["Temporal modelling only"] == ["0", "[8,9,10]", "[2,2,3]", "0.0", "0.0",
                                                "false"]
    assert knobs["Token reduction only"][2] == "[1,1,1]"
    assert knobs["TempMe"] == ["2", "[8,9,10]", "[2,2,3]", "0.3", "0.1", "true"]
    assert knobs["LoRA"] == ["-"] * 6


def test_expansion_grid_labels_seeds_and_per_backbone_settings(tmp_path):
    plan = load_plan(write(tmp_path, TINY))
    runs = expand(plan, check="config")
    assert [(r.row, r.seed) for r in runs] == [
        ("LoRA", 0), ("LoRA", 1),
        ("TempMe [method.ratio_cross=0.1]", 0), ("TempMe [method.ratio_cross=0.1]", 1),
        ("TempMe [method.ratio_cross=0.2]", 0), ("TempMe [method.ratio_cross=0.2]", 1)]
    tempme = runs[2].config
    assert tempme.method_options == {"clip_layers": [2, 3, 4], "ratio_cross": 0.1}
    assert tempme.pretrained is None and tempme.train.seed == 0
    assert tempme.experiment == "plan-tiny" and tempme.train.epochs == 1
    assert [knob_value(runs[0], k) for k in plan.knobs] == ["8", "12"]
    assert runs[0].tags() == {"plan": "tiny", "plan_row": "LoRA",
                              "config_digest": runs[0].digest}


def test_digests_are_stable_and_follow_what_a_run_computes(tmp_path):
    plan = load_plan(write(tmp_path, TINY))
    first = [r.digest for r in expand(plan, check="none")]
    assert first == [r.digest for r in expand(plan, check="none")]
    # where it runs and how fast it evaluates does not change what it computes
    same = expand(plan, {"device": "cpu", "data_root": "/elsewhere",
                         "train.eval_batch_size": 2}, check="none")
    assert [r.digest for r in same] == first
    other = expand(plan, {"train.lr": 1e-3}, check="none")
    assert not set(r.digest for r in other) & set(first)


@pytest.mark.parametrize("change, message", [
    ('', None),
    ('methd = "x"\n', "methd: unknown key"),
    ('[[rows]]\nlabel = "X"\nmethod = "nope"\n', "unknown method 'nope'"),
    ('[[rows]]\nlabel = "X"\nmethod = "lora"\npreset = "nope"\n', "unknown preset 'nope'"),
    ('[[rows]]\nlabel = "X"\nmethod = "lora"\ndataset = "nope"\n', "unknown dataset 'nope'"),
    ('[[rows]]\nlabel = "LoRA"\nmethod = "lora"\n', "duplicate row label 'LoRA'"),
    ('[[rows]]\nlabel = "X"\nmethod = "lora"\nset = { train.seed = 3 }\n',
     "train.seed is the plan's"),
    ('[[rows]]\nlabel = "X"\nmethod = "lora"\ncolour = 1\n', "colour: unknown key"),
    ('[[rows]]\nlabel = "X"\nmethod = "lora"\ngrid = { method.rank = [] }\n', "has no values"),
])
def test_plan_mistakes_are_one_line(tmp_path, change, message):
    text = TINY.replace('description = "tiny"\n', 'description = "tiny"\n' + change, 1) \
        if not change.startswith("[[rows]]") else TINY + change
    path = write(tmp_path, text)
    if message is None:  # the control: the plan itself is fine
        load_plan(path)
        return
    with pytest.raises(UserError, match=message) as caught:
        load_plan(path)
    assert "\n" not in str(caught.value) and path in str(caught.value)


@pytest.mark.parametrize("text, message", [
    (TINY.replace('baseline = "LoRA"', 'baseline = "Nope"'), "baseline 'Nope' is not a row"),
    (TINY.replace("seeds = [0, 1]", "seeds = [1, 1]"), "seeds must be distinct"),
    (TINY.replace('knobs = ["method.rank", "frames"]', 'knobs = ["colour"]'),
     "knob column 'colour' is not a setting"),
    (TINY.replace("method.ratio_cross = [0.1, 0.2]", "method.speed = [1]"),
     "grid axis 'method.speed' is not a setting of method 'tempme'"),
    (TINY.replace("method.ratio_cross = [0.1, 0.2]", "train.colour = [1]"),
     "grid axis 'train.colour' is not a setting"),
    (TINY.replace("method.ratio_cross = [0.1, 0.2]", "method.ratio_cross = [7]"),
     "ratio_cross must be within"),
])
def test_expansion_mistakes_are_one_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(UserError, match=message) as caught:
        expand(load_plan(path), check="config")
    assert "\n" not in str(caught.value)


def test_cli_refuses_a_bad_plan_with_exit_2(tmp_path):
    result = runner.invoke(app, ["bench", write(tmp_path, TINY + "[[rows]]\nlabel = 'X'\n"
                                                "method = 'nope'\n")])
    assert result.exit_code == 2 and "unknown method 'nope'" in result.output
    result = runner.invoke(app, ["bench", "no-such-plan"])
    assert result.exit_code == 2 and "unknown plan 'no-such-plan'; valid:" in result.output
    result = runner.invoke(app, ["bench", write(tmp_path, TINY), "--row", "Nope"])
    assert result.exit_code == 2 and "--row 'Nope' is not a row" in result.output


def one_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_a_plan_file_that_is_not_utf8_or_too_large_is_one_line(tmp_path):
    latin = tmp_path / "latin.toml"
    latin.write_bytes(TINY.replace('"tiny"', '"caf\xe9"', 1).encode("latin-1"))
    line = one_line(runner.invoke(app, ["bench", str(latin), "--dry-run"]))
    assert f"plan {latin}: not UTF-8 text (byte 0xe9 on line 2)" in line
    assert "save it as UTF-8" in line
    utf16 = tmp_path / "utf16.toml"
    utf16.write_text(TINY, encoding="utf-16")
    assert "not UTF-8 text (byte 0xff on line 1)" in one_line(
        runner.invoke(app, ["bench", str(utf16)]))
    big = tmp_path / "big.toml"
    big.write_text(TINY + "# padding\n" * 200_000)
    assert "is larger than 1 MiB" in one_line(runner.invoke(app, ["bench", str(big)]))
    deep = tmp_path / "deep.toml"
    deep.write_text(TINY + "x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert "not valid TOML: arrays or tables nested too deeply" in one_line(
        runner.invoke(app, ["bench", str(deep)]))


HUGE = """
description = "ten axes of ten values and two seeds: 2 * 10^12 runs"
experiment = "plan-huge"
seeds = [0, 1]
[defaults]
dataset = "synthetic"
[[rows]]
label = "LoRA"
method = "lora"
[[rows]]
label = "LoRA grid"
method = "lora"
[rows.grid]
""" + "".join(f"train.lr_{k} = [{', '.join(str(v) for v in range(10))}]\n"
              for k in range(12))


def test_a_plan_of_too_many_runs_is_refused_before_any_run_is_made(tmp_path, monkeypatch):
    """Counted from the grid sizes: neither a grid point nor a run is made (the expansion
    functions fail the test if called), so the refusal does not grow with the grid."""
    import suite.orchestrate.plans as plans

    def never(*args, **kwargs):
        raise AssertionError("the plan was expanded")

    monkeypatch.setattr(plans, "grid_points", never)
    monkeypatch.setattr(plans, "_resolve", never)
    path = write(tmp_path, HUGE, "huge.toml")
    assert plans.count_runs(load_plan(path)) == 2 * (1 + 10 ** 12)
    line = one_line(runner.invoke(app, ["bench", path, "--dry-run"]))
    assert line == (
        "error: plan huge expands to 2,000,000,000,002 runs (2 seed(s); row 'LoRA grid' alone "
        "has 1,000,000,000,000 grid points), more than the limit of 10,000: shrink its grids, "
        "or raise the limit with suite bench --max-runs N (or max_runs = N in the plan)")
    assert "more than the limit of 5" in one_line(
        runner.invoke(app, ["bench", path, "--max-runs", "5"]))
    assert "more than the limit of 7" in one_line(runner.invoke(
        app, ["bench", write(tmp_path, "max_runs = 7\n" + HUGE, "capped.toml"), "--dry-run"]))
    help_text = runner.invoke(app, ["bench", "--help"]).output
    assert f"else {plans.DEFAULT_MAX_RUNS})" in " ".join(help_text.split())


def test_the_run_limit_counts_every_row_grid_point_and_seed(tmp_path):
    plan = load_plan(write(tmp_path, TINY))  # LoRA + TempMe x 2 grid points, 2 seeds
    assert len(expand(plan, check="none", max_runs=6)) == 6
    with pytest.raises(UserError, match="expands to 6 runs .* more than the limit of 5"):
        expand(plan, check="none", max_runs=5)
    capped = load_plan(write(tmp_path, "max_runs = 5\n" + TINY, "capped.toml"))
    with pytest.raises(UserError, match="limit of 5"):
        expand(capped, check="none")
    assert len(expand(capped, check="none", max_runs=6)) == 6  # --max-runs wins
    with pytest.raises(UserError, match="max_runs: must be greater than or equal to 1"):
        load_plan(write(tmp_path, "max_runs = 0\n" + TINY, "zero.toml"))


@pytest.mark.slow
def test_dry_run_of_synthetic_all_lists_every_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = Path(__file__).resolve().parents[2] / "plans" / "synthetic-all.toml"
    result = runner.invoke(app, ["bench", str(shipped), "--dry-run", "--no-timing"])
    assert result.exit_code == 0, result.output
    runs = [line for line in result.stdout.splitlines() if line.startswith("  seed ")]
    assert len(runs) == 36 and all("start" in line and "GMACs/video" in line for line in runs)
    for method in discover():
        assert f": {method}" in result.stdout
    assert not (tmp_path / "mlflow.db").exists()  # a dry run writes nothing


@pytest.mark.slow
def test_dry_run_times_one_step_per_model_and_estimates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["bench", write(tmp_path, TINY), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    import json

    listed = json.loads(result.stdout[result.stdout.index("["):])
    assert len(listed) == 6 and {r["action"] for r in listed} == {"new"}
    for run in listed:
        e = run["estimate"]
        assert e["steps"] == 2  # 8 training videos, batch 4, one epoch
        assert e["seconds_per_step"] > 0
        assert e["seconds"] == pytest.approx(2 * e["seconds_per_step"])
    gmacs = {r["row"]: r["estimate"]["video_gmacs"] for r in listed}
    assert gmacs["TempMe [method.ratio_cross=0.2]"] < gmacs["LoRA"]


# -- the plan report ---------------------------------------------------------------------------


def spec(baseline="LoRA", kind="comparison"):
    return PlanSpec("p", "a plan", "plan-p", kind, baseline, ("method.rank",), (
        PlanRow("LoRA", ("d1", "d2"), "synthetic", "tiny-clip", {"method.rank": "8"},
                {"R-Sum": 193.0, "R@1": 43.7}, "paper, table 1"),
        PlanRow("TempMe", ("d3", "d4"), "synthetic", "tiny-clip", {"method.rank": "8"}),
        PlanRow("Empty", ("d5",), "synthetic", "tiny-clip", {"method.rank": "4"}),
    ))


def runs_frame():
    rows = [  # digest, start, R@1, R-Sum, GFLOPs
        ("d1", 1, 10.0, 100.0, 0.1), ("d2", 2, 14.0, 110.0, 0.1),
        ("d1", 3, 12.0, 104.0, 0.1),  # d1 again, later: replaces the first
        ("d3", 4, 20.0, 130.0, 0.07), ("d4", 5, 22.0, 140.0, 0.07),
        ("zz", 6, 99.0, 999.0, 9.9),  # another setting of the plan: not in the table
    ]
    return pd.DataFrame([{"config_digest": d, "start_time": t, "run_id": f"r{t}",
                          "selected_on": "val", "test/t2v_R1": r1, "test/t2v_rsum": rsum,
                          "cost/video_gmacs": g} for d, t, r1, rsum, g in rows])


def test_plan_table_keeps_the_plan_order_counts_each_digest_once_and_takes_deltas():
    table = plan_table(spec(), runs_frame())
    assert list(table["row"]) == ["LoRA", "TempMe", "Empty"]
    assert list(table["n"]) == [2, 2, 0]
    assert table.loc[0, "R@1"] == pytest.approx(13.0)  # latest d1 (12) and d2 (14)
    assert table.loc[0, "R@1 std"] == pytest.approx(pd.Series([12.0, 14.0]).std())
    assert table.loc[1, "Δ R-Sum"] == pytest.approx(135.0 - 107.0)
    assert table.loc[0, "Δ R@1"] == 0 and math.isnan(table.loc[2, "R@1"])
    assert table.loc[0, "paper R-Sum"] == 193.0 and math.isnan(table.loc[1, "paper R-Sum"])


@pytest.mark.parametrize("fmt", ["md", "latex", "html", "csv"])
def test_plan_table_renders_with_references_and_their_source(fmt):
    text = render_plan(spec(kind="ablation"), plan_table(spec(), runs_frame()), fmt)
    if fmt == "csv":
        assert text.splitlines()[0].startswith("row,method.rank,n,")
        assert "193.0" in text
        return
    plus_minus = {"md": " ± ", "html": " ± ", "latex": r" $\pm$ "}[fmt]
    assert f"13.0{plus_minus}1.4" in text and "+28.0" in text and "baseline" in text
    assert "193.0" in text and "paper, table 1" in text
    assert text.index("LoRA") < text.index("TempMe") < text.index("Empty")
    if fmt == "md":
        header = text.splitlines()[0]
        assert header.startswith("| row | rank | n | R@1 |") and "paper R-Sum" in header
        assert "videos/s" not in header  # the ablation style: the figures that move


def test_list_plans_names_every_shipped_plan_with_its_run_count():
    result = runner.invoke(app, ["list", "plans"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert sorted(lines) == available()
    assert lines["synthetic-all"].endswith("(36 runs)")
    listed = runner.invoke(app, ["list", "plans", "--json"])
    import json

    assert {p["name"]: p["runs"] for p in json.loads(listed.stdout)}["tempme-msrvtt-b32"] == 11
