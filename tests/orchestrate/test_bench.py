"""``suite bench``: real processes on a tiny plan. A second invocation starts no run; a bench
killed mid-run (SIGKILL or SIGTERM) and started again ends with the figures of an uninterrupted
one; ``--jobs 2`` gives the figures of ``--jobs 1``; the submitit launcher runs the plan through
its local executor. Every run uses one thread, so that all of them compute alike."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

SUITE = str(Path(sys.executable).parent / "suite")

# Two rows, one seed: 16 training videos in batches of 4, three epochs (a checkpoint after each).
PLAN = """
description = "a tiny plan"
experiment = "plan-tiny"
seeds = [0]
baseline = "LoRA"
[defaults]
dataset = "synthetic"
[defaults.set]
pretrained = "none"
train = { epochs = 3, batch_size = 4, eval_batch_size = 8 }
data = { num_train = 16, num_val = 4, num_test = 8 }
[[rows]]
label = "LoRA"
method = "lora"
[[rows]]
label = "TempMe"
method = "tempme"
"""
FIGURES = ("test/t2v_R1", "test/t2v_R5", "test/t2v_R10", "test/t2v_MdR", "test/t2v_MnR",
           "test/t2v_rsum", "test/v2t_R1", "test/rsum_both")


def folder(tmp_path_factory, name):
    path = tmp_path_factory.mktemp(name)
    (path / "tiny.toml").write_text(textwrap.dedent(PLAN))
    return path


def start(cwd, *args):
    """``suite bench tiny.toml ARGS`` in ``cwd``; output to files (read with ``output``)."""
    stamp = time.monotonic_ns()
    out, err = (open(cwd / f"bench{stamp}.{s}", "w+") for s in ("out", "err"))  # noqa: SIM115
    process = subprocess.Popen([SUITE, "bench", "tiny.toml", "--threads", "1", *args], cwd=cwd,
                               stdout=out, stderr=err, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    process.files = (out, err)
    return process


def output(process, timeout=900):
    process.wait(timeout=timeout)
    texts = []
    for file in process.files:
        file.seek(0)
        texts.append(file.read())
        file.close()
    return process.returncode, *texts


def bench(cwd, *args):
    code, out, err = output(start(cwd, *args))
    assert code == 0, err[-3000:]
    return out + err


def figures(cwd):
    """plan_row -> test figures of the FINISHED runs, and how many runs the store holds."""
    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("plan-tiny")
    runs = client.search_runs([experiment.experiment_id])
    done = {r.data.tags["plan_row"]: {k: r.data.metrics[k] for k in FIGURES}
            for r in runs if r.info.status == "FINISHED"}
    return done, len(runs)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted bench, one run after another in the bench's process."""
    cwd = folder(tmp_path_factory, "reference")
    text = bench(cwd)
    assert "2 finished" in text
    done, count = figures(cwd)
    assert sorted(done) == ["LoRA", "TempMe"] and count == 2
    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    for run in client.search_runs([client.get_experiment_by_name("plan-tiny").experiment_id]):
        assert run.data.tags["plan"] == "tiny" and len(run.data.tags["config_digest"]) == 16
    return cwd, done


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_second_invocation_starts_no_run(reference):
    cwd, done = reference
    text = bench(cwd)
    assert "2 already finished" in text and "starting" not in text
    assert figures(cwd) == (done, 2)


def wait_for_checkpoint(cwd, process, timeout=600):
    """Until the first epoch checkpoint of a run exists (the bench is then mid-run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list((cwd / "checkpoints").glob("*/last.pt")):
            return
        assert process.poll() is None, "the bench ended before any checkpoint"
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_bench_resumes_and_ends_with_the_same_figures(reference, tmp_path_factory,
                                                               how):
    _, expected = reference
    cwd = folder(tmp_path_factory, f"killed-{how.name}")
    process = start(cwd)
    wait_for_checkpoint(cwd, process)
    process.send_signal(how)
    code, out, err = output(process)
    if how == signal.SIGTERM:  # stops cleanly: the run KILLED, its checkpoint kept
        assert code == 130, err[-3000:]
        client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
        statuses = [r.info.status for r in client.search_runs(
            [client.get_experiment_by_name("plan-tiny").experiment_id])]
        assert statuses == ["KILLED"]
    else:
        assert code == -signal.SIGKILL
    text = bench(cwd)
    assert "resuming run" in text
    done, _ = figures(cwd)
    assert done == expected
    assert not list((cwd / "checkpoints").glob("*/last.pt"))  # finished runs keep none


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_jobs_give_the_figures_of_one(reference, tmp_path_factory):
    _, expected = reference
    cwd = folder(tmp_path_factory, "jobs")
    text = bench(cwd, "--jobs", "2")
    assert "2 finished" in text
    assert figures(cwd) == (expected, 2)
    logs = sorted(p.name for p in (cwd / "bench" / "tiny" / "logs").glob("*.log"))
    assert logs == ["LoRA-seed0.log", "TempMe-seed0.log"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_submitit_launcher_runs_the_plan_through_its_local_executor(reference,
                                                                        tmp_path_factory):
    _, expected = reference
    cwd = folder(tmp_path_factory, "submitit")
    text = bench(cwd, "--launcher", "slurm", "--submitit-cluster", "local", "--gpus-per-job",
                 "0", "--row", "LoRA")
    assert "submitted" in text and "1 finished" in text
    done, count = figures(cwd)
    assert done == {"LoRA": expected["LoRA"]} and count == 1
    assert list((cwd / "bench" / "tiny" / "jobs").glob("*_result.pkl"))


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_plan_report_shows_the_finished_runs(reference, tmp_path):
    from typer.testing import CliRunner

    from suite.cli import app

    cwd, done = reference
    args = ["report", "--plan", str(cwd / "tiny.toml"), "--tracking-uri",
            f"sqlite:///{cwd / 'mlflow.db'}"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "rsum_vs_gflops_synthetic_tiny-clip.png", "tiny.md"]
    text = (tmp_path / "out" / "tiny.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith("| LoRA")
             or line.startswith("| TempMe")]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    assert [cells[0] for cells in rows] == ["LoRA", "TempMe"]
    for cells, row in zip(rows, ("LoRA", "TempMe"), strict=True):
        assert cells[1] == "1"  # n
        # R-Sum, then its 95% bootstrap interval over the test queries
        value, _, interval = cells[7].partition(" [")
        assert value == f"{done[row]['test/t2v_rsum']:.1f}"
        low, high = (float(x) for x in interval.rstrip("]").split(", "))
        assert low <= float(value) <= high
    assert rows[0][-1] == "baseline"  # Δ R-Sum, the last column
    delta = done["TempMe"]["test/t2v_rsum"] - done["LoRA"]["test/t2v_rsum"]
    assert rows[1][-1].split(" (n.s.)")[0] == f"{delta:+.1f}"
