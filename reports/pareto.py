"""``suite report --pareto STUDY``: the Pareto front of a multi-objective sweep as a table, and
a plot of test R-Sum against video GFLOPs with the study's trials (the front highlighted), the
other FINISHED runs of its MLflow experiment on the same dataset, and the paper's published
points from the plan files where the dataset matches."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from suite.errors import ReportError

RSUM, GFLOPS = "test/t2v_rsum", "cost/video_gmacs"
FORMATS = {"md": "md", "csv": "csv", "latex": "tex"}


@dataclass(frozen=True)
class ParetoReport:
    """The front (``table``), every point of the plot (``points``: kind, label, GFLOPs,
    R-Sum) and the plot's caption."""

    study: str
    dataset: str
    table: pd.DataFrame
    points: pd.DataFrame
    caption: str

    def render(self, fmt: str) -> str:
        if fmt not in FORMATS:
            raise ReportError(f"--pareto writes {', '.join(FORMATS)}, not {fmt!r}")
        if fmt == "csv":
            return self.table.to_csv(index=False)
        if fmt == "latex":
            return self.table.to_latex(index=False, float_format="%.4g")
        return markdown(self.table) + f"\n{self.caption}\n"

    def figure(self) -> Figure:
        return pareto_figure(self.points, f"{self.study} ({self.dataset})")

    def write(self, fmt: str, folder: Path) -> list[Path]:
        """``pareto-<study>.<ext>`` and the plot as PNG and SVG in ``folder``."""
        from suite.common.files import write_atomic

        text = self.render(fmt)
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / f"pareto-{self.study}"
        write_atomic(stem.with_suffix(f".{FORMATS[fmt]}"), text)
        figure = self.figure()
        for ext in ("png", "svg"):
            write_atomic(stem.with_suffix(f".{ext}"),
                         partial(figure.savefig, format=ext, dpi=150, metadata=None))
        return [stem.with_suffix(f".{e}") for e in (FORMATS[fmt], "png", "svg")]


def markdown(table: pd.DataFrame) -> str:
    cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
             for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells]) + "\n"


def pareto_report(study_name: str, storage: str | None, uri: str) -> ParetoReport:
    """The report of ``study_name`` in the Optuna ``storage`` (default: the sweep's)."""
    import optuna

    from suite.orchestrate.sweep import DEFAULT_STORAGE, open_storage

    storage = storage or DEFAULT_STORAGE
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:
        raise ReportError(f"no study {study_name!r} in {storage}") from None
    if len(study.directions) < 2:
        raise ReportError(f"study {study_name!r} has one objective: no Pareto front (use "
                          f"`suite sweep --objective r_sum --objective gflops`)")
    dataset = str(study.user_attrs.get("dataset", ""))
    front = sorted(study.best_trials, key=lambda t: t.values[-1])
    if not front:
        raise ReportError(f"study {study_name!r} has no complete trial")
    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    logged = trial_metrics(study, uri)
    on_front = {t.number for t in front}
    table = pd.DataFrame([{
        "trial": t.number,
        **{f"{n} ({d.name.lower()[:3]})": v
           for n, d, v in zip(names, study.directions, t.values, strict=True)},
        "test R-Sum": logged.get(t.number, {}).get(RSUM, float("nan")),
        "params": ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float)
                            else f"{k.split('.')[-1]}={v}" for k, v in t.params.items()),
        "MLflow run": t.user_attrs.get("mlflow_run_id", ""),
    } for t in front])
    trials = [{"kind": "front" if n in on_front else "trial", "label": f"trial {n}",
               "gflops": m.get(GFLOPS), "rsum": m.get(RSUM)} for n, m in sorted(logged.items())]
    others = other_runs(uri, front[0].user_attrs.get("mlflow_run_id"), dataset)
    paper = published_points(dataset)
    points = pd.DataFrame(trials + others + paper, columns=["kind", "label", "gflops", "rsum"])
    caption = (f"Text-to-video R-Sum on the test split against video GFLOPs (multiply-adds "
               f"per video) on {dataset}: the {len(logged)} complete trials of {study_name} "
               f"(the Pareto front, chosen on {', '.join(names)}, joined), "
               f"{len(others)} other FINISHED runs of the experiment, and "
               + (f"{len(paper)} published points from the plan files."
                  if paper else f"no published points (no plan file has references on "
                                f"{dataset})."))
    return ParetoReport(study_name, dataset, table, points, caption)


def trial_metrics(study: Any, uri: str) -> dict[int, dict[str, float]]:
    """Trial number -> its MLflow run's metrics, for the complete trials."""
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    client = MlflowClient(uri)
    return {t.number: client.get_run(t.user_attrs["mlflow_run_id"]).data.metrics
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "mlflow_run_id" in t.user_attrs}


def other_runs(uri: str, run_id: str | None, dataset: str) -> list[dict[str, Any]]:
    """The FINISHED runs (not sweep trials) on ``dataset`` of the experiment of ``run_id``."""
    from mlflow.tracking import MlflowClient

    from reports.runs import load_runs

    if run_id is None:
        return []
    client = MlflowClient(uri)
    experiment = client.get_experiment(client.get_run(run_id).info.experiment_id).name
    try:
        runs = load_runs(experiment, uri)
    except ReportError:  # only sweep trials in the experiment
        return []
    if RSUM not in runs or GFLOPS not in runs:
        return []
    runs = runs[runs["dataset"] == dataset]
    return [{"kind": "run", "label": str(r["method"]), "gflops": r[GFLOPS], "rsum": r[RSUM]}
            for _, r in runs.iterrows()]


def published_points(dataset: str) -> list[dict[str, Any]]:
    """The plan files' reference figures with both R-Sum and GFLOPs, on ``dataset``."""
    from suite.orchestrate.plans import available, load_plan

    found = []
    for name in available():
        plan = load_plan(name)
        for row in plan.rows:
            ref = row.reference
            where = row.dataset or plan.defaults.dataset
            if ref is None or ref.rsum is None or ref.gflops is None or where != dataset:
                continue
            backbone = row.backbone or plan.defaults.backbone or ""
            found.append({"kind": "paper", "label": f"{row.label} ({backbone}, paper)",
                          "gflops": ref.gflops, "rsum": ref.rsum})
    return found


STYLE = {  # kind -> marker, colour, legend label
    "trial": ("o", "0.65", "trials"),
    "run": ("s", "tab:blue", "other runs"),
    "paper": ("^", "tab:red", "published (paper)"),
    "front": ("*", "tab:orange", "Pareto front"),
}


def pareto_figure(points: pd.DataFrame, title: str) -> Figure:
    """Test R-Sum against GFLOPs; the front joined in GFLOPs order, runs and papers labelled."""
    figure = Figure(figsize=(6.4, 4.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    shown = points.dropna(subset=["gflops", "rsum"])
    for kind, (marker, colour, label) in STYLE.items():
        group = shown[shown["kind"] == kind].sort_values("gflops")
        if group.empty:
            continue
        axes.plot(group["gflops"], group["rsum"], marker=marker, color=colour, label=label,
                  linestyle="-" if kind == "front" else "", markersize=11 if kind == "front"
                  else 7)
        if kind in ("run", "paper", "front"):
            for _, p in group.iterrows():
                text = p["label"].removeprefix("trial ") if kind == "front" else p["label"]
                axes.annotate(text, (p["gflops"], p["rsum"]), textcoords="offset points",
                              xytext=(5, 5), fontsize=8)
    axes.set_xlabel("video GFLOPs (multiply-adds per video)")
    axes.set_ylabel("text-to-video R-Sum (test, %)")
    axes.set_title(title)
    axes.margins(0.12)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return figure
