"""The README's code stays true: its TempMe snippet runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_tempme_snippet_runs():
    text = README.read_text()
    section = text[text.index("## TempMe outside the suite"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
