"""``suite bench --dry-run``: the plan's defaults once, what each row changes, one cost unit,
a line per model while it estimates."""

from suite.orchestrate import estimate as est
from suite.orchestrate.plans import expand, load_plan
from suite.orchestrate.state import Action


def test_rows_show_what_they_change_and_costs_share_one_unit():
    plan = load_plan("synthetic-all")
    runs = expand(plan, check="none")
    estimates = {r.digest: est.Estimate(0.0747, 124, 1.0 if "fp32" in r.row else 0.3, 32)
                 for r in runs}
    lines = est.dry_run_lines(plan, runs, [Action("new") for _ in runs], estimates)
    text = "\n".join(lines)
    assert "None" not in text and "preset=" not in text
    assert "train.precision=auto" in lines[2]  # the default, next to the row that changes it
    fp32 = lines.index("TempMe, fp32 evaluation: tempme")
    assert lines[fp32 + 1].strip() == "train.precision=fp32"
    assert lines[lines.index("TempMe: tempme") + 1].startswith("  seed 0")  # changes nothing
    costs = [line.rsplit("= ", 1)[1] for line in lines if "training steps x" in line]
    assert {cost.split()[1] for cost in costs} == {"min"}  # 37 s and 124 s: both in minutes
    assert "(+" not in lines[-1] and lines[-1].count("min") == 1


def test_durations_in_a_given_unit():
    assert est.describe_duration(114) == "114 s"
    assert est.describe_duration(114, est.unit_for(130)) == "1.9 min"
    assert est.describe_duration(7300) == "2.0 h"
    assert est.describe_duration(None) == "?"


def test_a_piped_dry_run_says_which_model_it_estimates(monkeypatch, tmp_path):
    said = []
    monkeypatch.setattr("suite.orchestrate.state.say", said.append)
    monkeypatch.setattr(est, "estimate", lambda runs, timing, on_model: on_model("model 1/1"))

    class Options:
        uri = f"sqlite:///{tmp_path}/absent.db"

    seen = []
    est.dry_run([], Options(), timing=False, on_model=seen.append)
    assert seen == ["model 1/1"] and said == ["estimating costs: model 1/1"]  # tests: no tty
