"""The comparison table: one row per (dataset, backbone, method, selected_on), over seeds."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable

import pandas as pd

from suite.errors import ReportError

RSUM = "R-Sum"
GFLOPS = "GFLOPs (MACs)"
SKIPPED = "skipped test videos"
NO_PRESET = ("None", "-", "")
Format = Callable[[float], str]


def _gflops(value: float) -> str:
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


#: (column label, MLflow metric, number format, std shown whenever n > 1).
#: Retrieval metrics always show their spread; cost figures only when it is not zero
#: (GFLOPs, tokens and parameters do not depend on the seed).
COLUMNS: list[tuple[str, str, Format, bool]] = [
    ("R@1", "test/t2v_R1", "{:.1f}".format, True),
    ("R@5", "test/t2v_R5", "{:.1f}".format, True),
    ("R@10", "test/t2v_R10", "{:.1f}".format, True),
    ("MdR", "test/t2v_MdR", "{:.1f}".format, True),
    ("MnR", "test/t2v_MnR", "{:.1f}".format, True),
    (RSUM, "test/t2v_rsum", "{:.1f}".format, True),
    (GFLOPS, "cost/video_gmacs", _gflops, False),
    ("tokens", "cost/output_tokens", "{:.0f}".format, False),
    ("trainable params", "cost/params_trainable", "{:,.0f}".format, False),
    ("videos/s", "cost/videos_per_second", "{:.2f}".format, False),
    ("train peak MiB", "cost/training_peak_mib", "{:.0f}".format, False),
    (SKIPPED, "data/test_skipped_videos", "{:.0f}".format, False),
]
#: Columns shown only when some row has a figure other than 0 (or a preset).
OPTIONAL = {SKIPPED}
KEYS = ["dataset", "backbone", "method", "selected_on", "preset"]
FORMATS = {"md": "md", "latex": "tex", "csv": "csv", "html": "html"}  # format -> extension
TEST_MARK = "†"
NOTES = [
    "Text-to-video retrieval on the test split; mean ± std over runs (seeds) when n > 1.",
    f"{GFLOPS} = multiply-adds of the visual tower per video, the protocol's (and the "
    "papers') convention; tokens = tokens leaving the last visual block per video.",
]
TEST_NOTE = f"{TEST_MARK} selected on test split (papers' practice); other rows on validation."


def comparison_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Aggregate tidy runs (``reports.runs.load_runs``): the keys, ``n``, then per column of
    ``COLUMNS`` its mean under the label and its std under ``"<label> std"`` (NaN when n = 1).

    Only repeats of one setting are averaged: runs of a method that differ in any other setting
    than the seed (``params``) get rows of their own, told apart by a ``setting`` column
    (``train.lr=0.0001``: the settings that differ between those rows).
    Rows are sorted by dataset, backbone, method, then validation-selected before test-selected.
    """
    frame = runs.copy()
    if "params" not in frame:
        frame["params"] = "{}"
    if "preset" not in frame:
        frame["preset"] = "-"
    for _, metric, _, _ in COLUMNS:
        if metric not in frame:
            frame[metric] = math.nan
    grouped = frame.groupby([*KEYS, "params"], sort=False)
    table = grouped.size().rename("n").to_frame()
    for label, metric, _, _ in COLUMNS:
        table[label] = grouped[metric].mean()
        table[f"{label} std"] = without_rounding_noise(grouped[metric].std(), table[label])
    table = table.reset_index()
    settings = setting_labels(table)
    table = table.drop(columns="params")
    if settings.str.len().any():
        table.insert(KEYS.index("method") + 1, "setting", settings)
    order = table["selected_on"].map({"val": 0, "test": 1}).fillna(2)
    sort = ["dataset", "backbone", "method", "_order", *(["setting"] if "setting" in table else [])]
    return (table.assign(_order=order).sort_values(sort, kind="stable")
            .drop(columns="_order").reset_index(drop=True))


def without_rounding_noise(std: pd.Series, mean: pd.Series) -> pd.Series:
    """The spread with float summation noise zeroed (identical multiply-add counts summed in
    another order differ by 1e-17), so that equal figures show no ± (NaN stays NaN)."""
    return std.mask(std <= 1e-9 * mean.abs(), 0.0)


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
            labels[i] = ", ".join(f"{k}={p.get(k, '-')}" for k in varying)
    return labels


def render(table: pd.DataFrame, fmt: str) -> str:
    """The table as ``md``, ``latex``, ``csv`` (numbers, std in their own columns) or ``html``."""
    if fmt not in FORMATS:
        raise ReportError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if fmt == "csv":
        return table.to_csv(index=False)
    headers, rows = display_cells(table)
    notes = NOTES + ([TEST_NOTE] if (table["selected_on"] == "test").any() else [])
    if SKIPPED in headers:
        notes.append(f"{SKIPPED}: videos left out by --on-bad-video skip; each of their "
                     f"captions counts as a miss in the figures.")
    return {"md": markdown, "latex": _latex, "html": _html}[fmt](headers, rows, notes)


def display_cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells: ``mean ± std``, ``-`` for a missing figure, † on methods
    selected on test."""
    setting = ["setting"] if "setting" in table else []
    if "preset" in table and not table["preset"].isin(NO_PRESET).all():
        setting.append("preset")
    shown = [c for c in COLUMNS if c[0] not in OPTIONAL or (table[c[0]].fillna(0) > 0).any()]
    headers = ["dataset", "backbone", "method", *setting, "n"] + [label for label, *_ in shown]
    rows = []
    for _, row in table.iterrows():
        method = row["method"] + (TEST_MARK if row["selected_on"] == "test" else "")
        cells = [row["dataset"], row["backbone"], method, *(str(row[c]) for c in setting),
                 str(row["n"])]
        cells += [figure_cell(row, label, number, always_std)
                  for label, _, number, always_std in shown]
        rows.append(cells)
    return headers, rows


def figure_cell(record: pd.Series, label: str, number: Format, always_std: bool) -> str:
    """``mean ± std`` of one column of a table row (``n`` runs): ``-`` without a figure, the
    spread only over several runs and, unless ``always_std``, only when it is not 0."""
    mean, std = record[label], record[f"{label} std"]
    if pd.isna(mean):
        return "-"
    cell = number(mean)
    if record["n"] > 1 and not pd.isna(std) and (always_std or std > 0):
        cell += " ± " + number(std)
    return cell


def markdown(headers: list[str], rows: list[list[str]], notes: list[str],
             text_columns: int | None = None) -> str:
    """The project's one Markdown table renderer: the first ``text_columns`` columns (default:
    those before ``n``) left-aligned, numbers right-aligned, then the notes."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    text = text_columns if text_columns is not None else headers.index("n")
    align = ["---"] * text + ["---:"] * (len(headers) - text)
    body = [line(headers), "|" + "|".join(align) + "|", *(line(r) for r in rows)]
    return "\n".join(body + [""] + notes) + "\n"


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
          "^": r"\textasciicircum{}", "±": r"$\pm$", TEST_MARK: r"$^\dagger$"}


def _tex(text: str) -> str:
    return "".join(_LATEX.get(char, char) for char in text)


def _latex(headers: list[str], rows: list[list[str]], notes: list[str]) -> str:
    def line(cells: list[str]) -> str:
        return " & ".join(_tex(c) for c in cells) + r" \\"

    text = headers.index("n")
    spec = "l" * text + "r" * (len(headers) - text)
    body = ["% needs \\usepackage{booktabs}", f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
            line(headers), r"\midrule", *(line(r) for r in rows), r"\bottomrule",
            r"\end{tabular}", ""]
    body += [r"\par{\footnotesize " + _tex(note) + "}" for note in notes]
    return "\n".join(body) + "\n"


def _html(headers: list[str], rows: list[list[str]], notes: list[str]) -> str:
    table = pd.DataFrame(rows, columns=headers).to_html(index=False, border=0,
                                                        classes="tvr-report")
    return table + "\n" + "".join(f"<p>{html.escape(note)}</p>\n" for note in notes)
