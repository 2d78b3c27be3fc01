"""Developer sessions: tests, lint (ruff and the import contracts), typecheck (default); bench,
gpu_check and lowest on demand (`nox -s bench`, `nox -s gpu_check`, `nox -s lowest`)."""

import re
import tomllib
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("ruff", "check", ".")
    session.run("lint-imports")


@nox.session
def fast(session: nox.Session) -> None:
    """The quick loop: every test but the slow ones (`pytest -m "not slow"`)."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-m", "not slow", *session.posargs)


@nox.session(name="gpu_check")
def gpu_check(session: nox.Session) -> None:
    """On a CUDA machine: TempMe and LoRA fp16 inference on ViT-B/32 and B/16, training-step
    times and a torchrun smoke run, in benchmarks/results/gpu_check.json (a few minutes);
    without a GPU it says so and exits 0."""
    session.install("-e", ".[dev]")
    session.run("python", "benchmarks/gpu_check.py", *session.posargs)


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy", "suite", "methods", "tempme", "reports", "cliptools")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (not run in CI): video decoding (PyAV before and with the decoding plan,
    torchcodec and decord2, the frame cache formats), then the one table of the model side:
    per method videos/s, GFLOP/s and share of the measured matmul peak in fp32 and bf16, the
    training step, and the decoders' rates when decode.py leaves them as JSON rows
    (``[{"source": ..., "videos_per_second": ...}]``) in benchmarks/results/decode.json. Each
    writes its tables to benchmarks/results/."""
    session.install("-e", ".[dev,decoders]")
    session.run("python", "benchmarks/decode.py", "--cosine", "--out",
                "benchmarks/results/decode.md")
    session.run("python", "benchmarks/throughput.py", "--train", "--decode-rates",
                "benchmarks/results/decode.json", *session.posargs)


# The smoke subset `lowest` runs: configs, the CLI, one end-to-end run, checkpoints, metrics.
SMOKE = ["tests/cli/test_cli.py", "tests/cli/test_bad_input.py", "tests/job/test_run_end_to_end.py",
         "tests/job/test_resume.py", "tests/job/test_metrics.py",
         "tests/methods/test_methods_tempme.py"]


def lowest_constraints() -> list[str]:
    """``name==lower bound`` for every dependency of pyproject.toml except torch and
    torchvision: their oldest allowed builds are multi-GB CUDA wheels this project's machines
    cannot fetch, so the session keeps the installed ones (say so when you report it)."""
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    pins = []
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([^,;\s]+)", requirement.strip())
        if match and match.group(1) not in ("torch", "torchvision"):
            pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


@nox.session
def lowest(session: nox.Session) -> None:
    """Install every dependency at its lower bound (torch excepted, see lowest_constraints)
    and run the smoke subset: the bounds in pyproject.toml are real, not hopes."""
    constraints = Path(session.create_tmp()) / "lowest.txt"
    constraints.write_text("\n".join(lowest_constraints()) + "\n")
    session.install("torch", "torchvision")
    session.install("-c", str(constraints), "-e", ".[dev]")
    session.run("pip", "list")
    session.run("pytest", *(session.posargs or SMOKE))
