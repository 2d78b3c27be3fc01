"""The HTML reports in a real browser (Debian's chromium driven by Playwright): the table and
every plot render, the key figures are visible and on one line, means line up on their decimal
point, nothing overflows a 1280 px wide window; a full-page screenshot of each is saved (under
the test's tmp_path, and copied to the folder named by ``SUITE_SCREENSHOTS`` when set).

Without chromium or Playwright the tests skip, except under CI (``CI`` set), where they fail:
``.ci/browser`` installs both.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from report_runs import PLAN
from typer.testing import CliRunner

from suite.cli import app

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH = 1280


def _missing() -> str | None:
    if not Path(CHROMIUM).is_file():
        return f"no chromium at {CHROMIUM} (.ci/browser installs Debian's)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    return None


@pytest.fixture(scope="module")
def browser():
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the browser test: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder


def html_report(tmp_path: Path, store: str, *args: str) -> Path:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["report", "--tracking-uri", store, "--format", "html",
                                      "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    (path,) = [Path(line) for line in result.stdout.split()]
    return path


#: Per figure column: the x of each mean's decimal point (the last "." before any "±").
DECIMAL_POINTS = """(header) => {
  const table = document.querySelector("table.report");
  const j = [...table.querySelectorAll("thead th")].findIndex(th => th.textContent === header);
  return [...table.querySelectorAll("tbody tr")].map(tr => {
    const text = tr.children[j].firstChild;
    const mean = text.textContent.split(" ± ")[0];
    const at = mean.lastIndexOf(".");
    if (at < 0) return null;
    const range = document.createRange();
    range.setStart(text, at);
    range.setEnd(text, at + 1);
    return range.getBoundingClientRect().left;
  });
}"""
#: Figure cells whose text runs over more than one line.
WRAPPED = """() => [...document.querySelectorAll("td.figure")].filter(td => {
  const range = document.createRange();
  range.selectNodeContents(td.firstChild);
  return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size > 1;
}).map(td => td.textContent)"""


def check_page(browser, path: Path, figures: list[str], aligned: list[str], shot: Path) -> None:
    """Open the page at 1280 px and check what a reader sees; save a full-page screenshot as
    ``shot`` (and a copy in ``$SUITE_SCREENSHOTS``)."""
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    table = page.locator("table.report")
    assert table.is_visible() and table.locator("tbody tr").count() > 1
    images = page.locator("img")
    assert images.count() >= 1
    for i in range(images.count()):
        image = images.nth(i)
        assert image.evaluate("img => img.complete && img.naturalWidth > 0"), f"broken image {i}"
        box = image.bounding_box()
        assert box is not None and box["width"] > 300 and box["x"] + box["width"] <= WIDTH
    for figure in figures:
        cell = page.locator("td", has_text=figure).first
        assert cell.is_visible(), figure
        box = cell.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, figure
    assert page.evaluate(WRAPPED) == []
    for header in aligned:
        points = [x for x in page.evaluate(DECIMAL_POINTS, header) if x is not None]
        assert len(points) > 1 and max(points) - min(points) < 1, (header, points)
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the page is {width[0]} px wide in a {width[1]} px window"
    overflow = page.evaluate("[...document.querySelectorAll('.scroll')]"
                             ".map(e => e.scrollWidth - e.clientWidth)")
    assert overflow and max(overflow) <= 0, f"the table overflows its column by {overflow} px"
    assert problems == []
    page.screenshot(path=str(shot), full_page=True)
    page.close()
    assert shot.stat().st_size > 10_000
    target = os.environ.get("SUITE_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / shot.name)


def test_the_comparison_report_renders(browser, comparison_store, tmp_path, screenshots):
    path = html_report(tmp_path, comparison_store)
    check_page(browser, path, ["21.4 ± 1.3", "141.8 ± 1.9", "390.00 ± 10.00", "0.0115",
                               "data.num_train=500"],
               ["R@1", "R-Sum", "videos/s"], screenshots / "comparison-report.png")


def test_the_plan_report_renders(browser, plan_store, tmp_path, screenshots):
    path = html_report(tmp_path, plan_store, "--plan", PLAN, "--dataset", "synthetic")
    assert path.name == f"{PLAN}.html"
    check_page(browser, path, ["135.5", "+10.4", "baseline", "Temporal modelling only"],
               ["R@1", "R-Sum", "GFLOPs (MACs)"], screenshots / "plan-report.png")


@pytest.mark.slow
def test_the_report_of_a_real_run_on_the_embedded_default(browser, tmp_path, monkeypatch,
                                                          screenshots):
    """`suite run` on the embedded default (tiny, a few seconds), then its HTML page."""
    from tiny_runs import TINY_DATA, json_summary

    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for method in ("zeroshot", "tempme"):
        ran = CliRunner().invoke(app, ["run", "--method", method, "--pretrained", "none",
                                       "--epochs", "1", "--batch-size", "4", *TINY_DATA,
                                       "--tracking-uri", store, "--json"])
        assert ran.exit_code == 0, ran.output
    rsum = json_summary(ran.stdout)["test"]["t2v_rsum"]
    path = html_report(tmp_path, store)
    check_page(browser, path, [f"{rsum:.1f}"], ["R@1"], screenshots / "embedded-default.png")
