"""The settings that tell a method's rows apart, defaults named by their values.

A run logs a loader option (``data.num_train``) or a method option (``method.rank``) only when
it was set; a run that kept the default has no such param. Before runs are grouped, each one's
params are completed with the values it used for the settings other runs of its method set, so
that ``data.num_train=2000`` reads the same whether it was typed or the card's default.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from reports.columns import KEYS
from suite.errors import SuiteError

#: What a setting shows when its default cannot be resolved here (no card, no such method).
UNKNOWN_DEFAULT = "default"


def with_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    """Tidy runs (``reports.runs``) whose ``params`` name, within each group of ``KEYS``, every
    setting any run of the group set (a run's default as the value it used)."""
    frame = frame.copy()
    for _, rows in frame.groupby(KEYS, sort=False):
        params = {i: json.loads(frame.at[i, "params"]) for i in rows.index}
        keys = set().union(*params.values())
        for i, own in params.items():
            missing = sorted(keys - set(own))
            if missing:
                own.update({key: default_of(key, own, frame.loc[i]) for key in missing})
                frame.at[i, "params"] = json.dumps(own, sort_keys=True)
    return frame


def default_of(key: str, params: dict[str, str], run: pd.Series) -> str:
    """The value (as MLflow logs it) that a run without param ``key`` used: a loader option's
    from the dataset card, a method option's from the method's config for the run's backbone
    and frames; ``UNKNOWN_DEFAULT`` when neither is known here."""
    section, _, name = key.partition(".")
    try:
        if section == "data":
            from suite.data.cards import load_card

            value = load_card(str(run["dataset"])).options.get(name, UNKNOWN_DEFAULT)
        elif section == "method":
            value = _method_default(str(run["method"]), str(run["backbone"]),
                                    int(params.get("frames", 12)), name)
        else:
            value = UNKNOWN_DEFAULT
    except (SuiteError, ValueError):
        value = UNKNOWN_DEFAULT
    return "None" if value is None else str(value)


def _method_default(method: str, backbone: str, frames: int, name: str) -> Any:
    """A method option's default; TempMe's schedule knobs left at None mean the backbone's
    schedule (as suite.orchestrate.plans.knob_value shows them)."""
    from suite.models.method import resolve_method_config

    resolved = resolve_method_config(method, backbone, frames, {})
    value = getattr(resolved, name, UNKNOWN_DEFAULT)
    if value is None:
        from methods.tempme import ScheduleConfig, schedule_of

        if isinstance(resolved, ScheduleConfig):
            value = schedule_of(resolved, backbone, frames).as_dict().get(name)
    return value


def setting_labels(table: pd.DataFrame) -> pd.Series:
    """Per row, ``key=value`` of the params that differ among the rows of its method ("" when
    a method has one setting)."""
    labels = pd.Series("", index=table.index)
    for _, rows in table.groupby(KEYS, sort=False):
        if len(rows) < 2:
            continue
        params = {i: json.loads(rows.at[i, "params"]) for i in rows.index}
        keys = sorted(set().union(*params.values()))
        varying = [k for k in keys if len({p.get(k) for p in params.values()}) > 1]
        for i, p in params.items():
            labels[i] = ", ".join(f"{k}={p.get(k, UNKNOWN_DEFAULT)}" for k in varying)
    return labels
