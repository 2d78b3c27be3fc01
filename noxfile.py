"""Developer sessions: tests, lint, typecheck (default) and bench (on demand: `nox -s bench`)."""

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy", "suite", "methods", "tempme", "reports")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (not run in CI): tempme against folded lora throughput, then video decoding
    against the frame cache; each writes its table to benchmarks/results/."""
    session.install("-e", ".[dev]")
    session.run("python", "benchmarks/throughput.py", *session.posargs)
    session.run("python", "benchmarks/decode.py", "--out", "benchmarks/results/decode.md")
