"""Help that reads well: a whole one-sentence summary per command, every option described,
examples on every command; usage mistakes Typer finds itself end in one clean line, exit 2."""

import pytest
import typer
from typer.testing import CliRunner

from suite.cli import app

runner = CliRunner()
COMMANDS = typer.main.get_command(app).commands


def test_every_command_has_a_whole_one_sentence_summary():
    assert set(COMMANDS) == {"run", "sweep", "bench", "report", "abandoned", "profile", "list",
                             "prepare", "merges"}
    for name, command in COMMANDS.items():
        summary = command.get_short_help_str(limit=1000)
        assert summary.endswith(".") and summary.count(". ") == 0, (name, summary)
        assert "..." not in summary and len(summary) <= 100, (name, summary)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_is_described_and_every_command_shows_examples(name):
    command = COMMANDS[name]
    for param in command.params:
        assert getattr(param, "help", None), f"suite {name} {param.name}: no help"
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and f"suite {name}" in result.output
    assert "<bool>" not in result.output  # flags show no type


def test_run_help_says_what_runs_without_a_dataset():
    result = runner.invoke(app, ["run", "--help"])
    assert "embedded default" in result.output and "synthetic" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["sweep", "--method", "lora", "--trials", "0"], "Invalid value for '--trials'"),
    (["run", "--epochs", "-1"], "Invalid value for '--epochs'"),
    (["run", "--no-such-option"], "No such option: --no-such-option"),
    (["bench"], "Missing argument"),
    (["nosuch"], "No such command 'nosuch'"),
    (["profile", "--frames", "x"], "Invalid value for '--frames'"),
])
def test_usage_mistakes_are_one_clean_line_with_exit_2(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "╭" not in result.output and "Traceback" not in result.output


def test_bare_suite_prints_the_help():
    result = runner.invoke(app, [])
    assert result.exit_code == 2 and "Commands:" in result.output
