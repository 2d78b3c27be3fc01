"""A :class:`~reports.columns.Shown` table as Markdown (``DataFrame.to_markdown``) or LaTeX
(``Styler.to_latex``, booktabs), and a table of figures as CSV. The HTML page is
``reports.html``."""

from __future__ import annotations

import re

import pandas as pd

from reports.columns import NO_PRESET, TEST_MARK, Shown


def markdown(shown: Shown) -> str:
    """A pipe table (text columns left-aligned, figures right-aligned), then the notes.

    ``to_markdown`` pads every cell to its column's width; the padding is trimmed so that a
    changed figure changes its own line of a diff, not the whole column."""
    k = shown.text_columns
    align = ["left"] * k + ["right"] * (len(shown.headers) - k)
    frame = pd.DataFrame([[c.replace("|", r"\|") for c in row] for row in shown.rows],
                         columns=range(len(shown.headers)))
    text = frame.to_markdown(index=False, tablefmt="pipe", colalign=align,
                             disable_numparse=True,
                             headers=[h.replace("|", r"\|") for h in shown.headers])
    lines = [re.sub(r"(?<=\|) +| +(?=\|)", " ", line) for line in text.splitlines()]
    lines[1] = re.sub(r"-+", "---", lines[1])
    return "\n".join([*lines, "", *shown.notes]) + "\n"


#: LaTeX for the characters that are not text under the default font encoding (OT1): pandas'
#: escape="latex" set, and ``<``, ``>`` (which print as ¡ ¿), ±, † and Δ.
_LATEX = str.maketrans({
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "±": r"$\pm$", TEST_MARK: r"$^\dagger$",
    "Δ": r"$\Delta$"})


def tex(text: str) -> str:
    """``text`` escaped for LaTeX: the one escaping of cells, headers and notes."""
    return str(text).translate(_LATEX)


def latex(shown: Shown) -> str:
    """A booktabs tabular (``Styler.to_latex``), then the notes as footnote-size paragraphs."""
    k = shown.text_columns
    styler = (pd.DataFrame(shown.rows, columns=range(len(shown.headers))).style
              .hide(axis="index").format(tex)
              .relabel_index([tex(h) for h in shown.headers], axis=1))
    table = styler.to_latex(hrules=True, column_format="l" * k + "r" * (len(shown.headers) - k))
    notes = [r"\par{\footnotesize " + tex(note) + "}" for note in shown.notes]
    return "\n".join(["% needs \\usepackage{booktabs}", table, *notes]) + "\n"


def csv(table: pd.DataFrame) -> str:
    """The figures as numbers (std in their own columns) rounded to 12 significant digits,
    which drops float summation noise (14.000000000000002 is 14.0); no preset and ``None`` are
    empty fields."""
    frame = table.copy()
    for column in frame.columns:
        if pd.api.types.is_string_dtype(frame[column]):
            frame[column] = frame[column].replace({"None": ""})
    if "preset" in frame:
        frame["preset"] = frame["preset"].where(~frame["preset"].isin(NO_PRESET), "")
    return frame.to_csv(index=False, float_format=lambda v: repr(float(f"{v:.12g}")))
