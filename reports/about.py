"""What a report compared and where it comes from: the datasets, backbones, presets and seeds
of the runs shown, the date, the suite's version and commit, and links to the runs."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path

import pandas as pd

from reports.columns import NO_PRESET


def now() -> str:
    """The local time, ISO-8601 with its offset, to the second."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def suite_version() -> str:
    try:
        return metadata.version("tvr-suite")
    except metadata.PackageNotFoundError:
        return "unknown"


def git_commit() -> str | None:
    """The short commit of the checkout the package runs from; None when it is not one (an
    installed wheel, even inside another repository)."""
    root = Path(__file__).resolve().parents[1]
    try:
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, timeout=10)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root:
            return None
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() or None


@dataclass(frozen=True)
class About:
    """The facts a report's title and header state. ``setups``: the (dataset, backbone) pairs
    compared; ``presets``: those of the runs, "-" for the suite's protocol."""

    subject: str  # "experiment tvr-suite", "plan synthetic-all"
    setups: tuple[tuple[str, str], ...]
    presets: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    tracking_uri: str = ""
    experiment_id: str = ""
    date: str = field(default_factory=now)
    version: str = field(default_factory=suite_version)
    commit: str | None = field(default_factory=git_commit)

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(dataset for dataset, _ in self.setups))

    @property
    def backbones(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(backbone for _, backbone in self.setups))

    @property
    def protocol(self) -> str:
        """The practice of the runs: the suite's protocol and/or the presets applied."""
        named = [p for p in self.presets if p not in NO_PRESET]
        parts = (["suite protocol"] if len(named) < len(self.presets) or not named else [])
        return ", ".join(parts + [f"preset {p}" for p in named])

    @property
    def title(self) -> str:
        """One line: what was compared, on what, under which practice and seeds."""
        seeds = f"; seeds {', '.join(map(str, self.seeds))}" if self.seeds else ""
        return (f"{self.subject[:1].upper()}{self.subject[1:]}: "
                f"{'; '.join(f'{d} with {b}' for d, b in self.setups) or 'no runs'} "
                f"({self.protocol}{seeds})")

    @property
    def made_by(self) -> str:
        commit = f" (commit {self.commit})" if self.commit else ""
        return f"tvr-suite {self.version}{commit}"

    def facts(self) -> list[tuple[str, str]]:
        """(name, value) pairs for the page's header."""
        facts = [("datasets" if len(self.datasets) > 1 else "dataset",
                  ", ".join(self.datasets) or "-"),
                 ("backbones" if len(self.backbones) > 1 else "backbone",
                  ", ".join(self.backbones) or "-"),
                 ("protocol", self.protocol),
                 ("seeds", ", ".join(map(str, self.seeds)) or "-"),
                 ("date", self.date), ("made by", self.made_by)]
        if self.tracking_uri:
            facts.append(("runs from", self.tracking_uri))
        return facts

    @property
    def on_server(self) -> bool:
        """Whether the runs are on an MLflow tracking server (http) whose UI can be linked."""
        return self.tracking_uri.startswith(("http://", "https://")) and bool(self.experiment_id)

    def run_url(self, run_id: str) -> str:
        """The run's page in the MLflow UI (of a tracking server, ``on_server``), in the
        UI's model-training view (MLflow 3 otherwise opens its GenAI view)."""
        return (f"{self.tracking_uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/"
                f"{run_id}?workflowType=machine_learning")


def about_runs(subject: str, runs: pd.DataFrame, uri: str = "") -> About:
    """The facts of the tidy runs a report shows (``reports.runs``)."""
    def column(name: str) -> pd.Series:
        return runs[name] if name in runs else pd.Series([], dtype=object)

    seeds = sorted({int(s) for s in column("seed").dropna()})
    experiments = column("experiment_id").dropna().unique()
    setups = dict.fromkeys(zip(column("dataset").astype(str), column("backbone").astype(str),
                               strict=True))
    presets = dict.fromkeys("-" if str(p) in NO_PRESET else str(p) for p in column("preset"))
    return About(subject, tuple(setups), tuple(presets), tuple(seeds), uri,
                 str(experiments[0]) if len(experiments) == 1 else "")
