"""The house stays as docs/architecture.md draws it: the import contracts hold, no module is
part of an import cycle, the CLI stays thin, and listing names imports no torch."""

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
PACKAGES = ("suite", "methods", "tempme", "reports", "cliptools")


@pytest.mark.subprocess
def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")  # import-linter's command
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's components of ``graph`` with more than one module (the import cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_strongly_connected_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [{"a", "b", "c"}]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_module_is_part_of_an_import_cycle():
    sys.setrecursionlimit(10000)
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m)
                 if i.split(".")[0] in PACKAGES} for m in graph.modules
             if m.split(".")[0] in PACKAGES}
    assert strongly_connected(edges) == []


def test_no_cli_file_is_over_400_lines():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "suite/cli").glob("*.py")}
    assert sizes and max(sizes.values()) < 400, sizes


@pytest.mark.subprocess
def test_listing_names_imports_no_torch():
    code = ("import sys; from suite.cli import app; from suite import catalog; "
            "rows = [catalog.listing(w) for w in ('methods', 'datasets', 'presets', 'plans')]; "
            "assert all(rows), rows; "
            "print(sorted(m for m in ('torch', 'open_clip', 'mlflow', 'optuna') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
