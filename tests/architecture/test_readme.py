"""The README and docs/ stay true: what the README claims about itself holds, every relative link
resolves, every ``suite COMMAND`` they mention is a real command, and the TempMe snippet in
docs/methods.md runs as written. Fast, no network."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
README = ROOT / "README.md"
DOCS = ROOT / "docs"

SETUP = ("python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && "
         ".venv/bin/suite run --method tempme --dataset synthetic")
TESTS = ".venv/bin/python -m pytest"

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)[^\n]*\n.*?^\1[ \t]*$", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")
# "suite COMMAND" inside code, as a command is typed: "suite run", ".venv/bin/suite run", not
# "tvr-suite", "suite.cli" or "suite/data". Prose ("the suite pre-trains") is outside code.
COMMAND = re.compile(r"(?<![\w.-])suite[ \t]+([a-z][\w-]*)")


def documents() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def code_of(text: str) -> list[str]:
    """Fenced blocks and inline code spans (spans only outside fenced blocks)."""
    blocks = [m.group(0) for m in FENCE.finditer(text)]
    rest = FENCE.sub("", text)
    return blocks + SPAN.findall(rest)


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M):
        slug = github_anchor(heading)
        n = seen.get(slug, 0)
        out.add(slug if n == 0 else f"{slug}-{n}")
        seen[slug] = n + 1
    return out


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) < 250, f"README.md has {len(lines)} lines; the docs belong in docs/"


def test_readme_has_the_two_commands():
    text = README.read_text()
    section = text[text.index("## Two commands"):]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert blocks[:2] == [SETUP + "\n", TESTS + "\n"]


def test_docs_exist_and_are_linked_from_readme():
    text = README.read_text()
    for doc in sorted(DOCS.glob("*.md")):
        assert f"](docs/{doc.name})" in text, f"README.md does not link docs/{doc.name}"


@pytest.mark.parametrize("path", documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path):
    text = FENCE.sub("", path.read_text())
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file, _, fragment = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f"{target} (no file {dest})")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target} (no heading #{fragment} in {dest.name})")
    assert not broken, f"{path.name}: broken links: {', '.join(broken)}"


def test_suite_commands_are_real():
    import typer

    from suite.cli import app  # lazily: the whole CLI only for this test

    real = set(typer.main.get_command(app).commands)
    unknown = []
    for path in documents():
        for code in code_of(path.read_text()):
            for name in COMMAND.findall(code):
                if name not in real:
                    unknown.append(f"{path.name}: suite {name}")
    assert not unknown, f"not commands of suite ({', '.join(sorted(real))}): {unknown}"


@pytest.mark.slow
def test_tempme_snippet_runs():
    text = (DOCS / "methods.md").read_text()
    section = text[text.index("## TempMe outside the suite"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "docs/methods.md", "exec"), {})
