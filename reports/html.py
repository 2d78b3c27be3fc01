"""The HTML report: one self-contained page (a Jinja2 template) holding the table (a pandas
Styler), the plots as SVG data URIs, and the notes as captions.

Figures are right-aligned with tabular digits, and each cell of a figure column is padded to
the column's widest ``± std`` with invisible generated content (CSS ``::after``), so means line
up on their decimal point whether or not a row has a spread, and the cell's text stays
``mean ± std``.
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass

import pandas as pd
from jinja2 import Environment, PackageLoader

from reports.about import About
from reports.columns import Shown

PLUS_MINUS = " ± "
#: Tables of more columns than this are set smaller and tighter (ablations with many knobs).
DENSE = 18
LEGEND = ("Shaded green: the best figure of its column among the rows of one dataset and "
          "backbone (as shown, rounded).")
BASELINE_LEGEND = "Shaded blue row: the baseline the Δ columns are taken against."


@dataclass(frozen=True)
class Image:
    """A plot for the page: its title, an SVG data URI and its caption."""

    title: str
    uri: str
    caption: str


def page(shown: Shown, about: About, images: list[Image]) -> str:
    """The whole page: title and facts, the table, its notes, the plots."""
    environment = Environment(loader=PackageLoader("reports", "templates"), autoescape=True,
                              trim_blocks=True, lstrip_blocks=True)
    legend = [LEGEND] if shown.best else []
    if shown.baseline is not None:
        legend.append(BASELINE_LEGEND)
    return environment.get_template("report.html.j2").render(
        about=about, table=table_html(shown, about), notes=shown.notes, legend=legend,
        images=images)


def table_html(shown: Shown, about: About) -> str:
    """The table as a pandas Styler renders it: text columns left, figure columns right with
    their decimal padding, best figures and the baseline row marked by classes, and a column of
    links to the MLflow runs when the store is a tracking server."""
    headers, rows = list(shown.headers), [list(r) for r in shown.rows]
    links = bool(shown.runs) and about.on_server
    if links:
        headers.append("MLflow runs")
        for row, runs in zip(rows, shown.runs, strict=True):
            row.append(" ".join(runs))
    frame = pd.DataFrame(rows, columns=range(len(headers)))
    figures = range(shown.text_columns, len(shown.headers))
    classes = pd.DataFrame("text", index=frame.index, columns=frame.columns)
    for j in figures:
        classes[j] = "figure"
    for i, j in shown.best:
        classes.loc[i, j] += " best"
    if shown.baseline is not None:
        classes.loc[shown.baseline] += " baseline"
    styler = (frame.style.hide(axis="index")
              .relabel_index([_header(h) for h in headers], axis=1)
              .format(lambda v: _breakable(str(v)), escape="html")
              .set_td_classes(classes)
              .set_table_attributes(f'class="report{" dense" * (len(headers) > DENSE)}"')
              .set_table_styles({j: [{"selector": "th", "props": [
                  ("text-align", "right" if j in figures else "left")]}]
                  for j in frame.columns}, axis=0))
    for j in figures:
        pads = _pads(frame[j].tolist())
        styler = styler.format(lambda v, p=pads: _padded(str(v), p), escape="html", subset=[j])
    if links:
        styler = styler.format(lambda v: _links(str(v), about), subset=[len(headers) - 1])
    return styler.to_html(table_uuid="report", cell_ids=False)


def _header(text: str) -> str:
    """A header that breaks between words and after "_" in a long name (``clip_pos_embed``),
    never inside a word at a hyphen (``R-Sum``)."""
    words = [html.escape(w) for w in text.split(" ")]
    return " ".join(w.replace("_", "_<wbr>") if len(w) > 10 else f'<span class="word">{w}</span>'
                    for w in words)


def _breakable(escaped: str) -> str:
    """A text cell that may break after "," and "=" (``[2,2,2,0]``, ``data.num_train=500``)."""
    return escaped.replace(",", ",<wbr>").replace("=", "=<wbr>")


def _suffix(cell: str) -> str:
    return cell[cell.index(PLUS_MINUS):] if PLUS_MINUS in cell else ""


def _glyphs(text: str) -> Counter[str]:
    """The characters of ``text``, every digit as "0" (tabular digits share one width)."""
    return Counter("0" if c.isdigit() else c for c in text)


def _pads(cells: list[str]) -> dict[str, str]:
    """Per cell, the invisible text that brings its ``± std`` to the column's widest: a cell
    without a spread gets the widest one with zeros for digits (`` ± 0.0``), a narrower spread
    the characters it lacks (``0``)."""
    suffixes = {cell: _suffix(cell) for cell in cells}
    widest: Counter[str] = Counter()
    for suffix in suffixes.values():
        widest |= _glyphs(suffix)
    template = max(("".join("0" if c.isdigit() else c for c in s) for s in suffixes.values()),
                   key=len, default="")
    pads = {}
    for cell, suffix in suffixes.items():
        missing = widest - _glyphs(suffix)
        if not suffix and _glyphs(template) == widest:
            pads[cell] = template
        else:
            pads[cell] = "".join(sorted(missing.elements(), key=lambda c: c != "0"))
    return pads


def _padded(escaped: str, pads: dict[str, str]) -> str:
    pad = pads.get(html.unescape(escaped), "")
    attribute = html.escape(pad, quote=True)
    return escaped + (f'<span class="pad" data-pad="{attribute}"></span>' if pad else "")


def _links(run_ids: str, about: About) -> str:
    return " ".join(f'<a href="{html.escape(about.run_url(r))}">{html.escape(r[:7])}</a>'
                    for r in run_ids.split())
