"""Progress in logs: when stderr is not a terminal (a SLURM log, a pipe), a plain line every
N seconds with step/total, the latest loss, the rate and the ETA; a terminal keeps rich bars."""

import subprocess
import sys

import pytest

from suite.common import progress


def test_plain_lines_come_every_interval_with_step_loss_rate_and_eta(monkeypatch):
    printed = []
    monkeypatch.setattr(progress.console, "print", lambda text, **kw: printed.append(text))
    ticks = iter(float(t) for t in range(100))  # the clock moves 1 s per read
    with progress.plain_progress("epoch 1/2", 10, every=3, clock=lambda: next(ticks)) as advance:
        for step in range(10):
            advance(loss=2.0 - step / 10)
    assert len(printed) == 4  # steps 3, 6, 9 (every 3 s) and the last
    assert printed[0].startswith("epoch 1/2: 3/10 (30%), loss 1.8, ")
    assert "/s, elapsed 0:00:03, ETA 0:00:07" in printed[0]
    assert printed[-1].startswith("epoch 1/2: 10/10 (100%), loss 1.1, ")
    assert printed[-1].endswith("ETA 0:00:00")


@pytest.mark.subprocess
def test_a_piped_run_prints_lines_while_the_loop_runs():
    code = ("import time\n"
            "from suite.common.progress import progress_bar\n"
            "with progress_bar('epoch 1/1', 4) as advance:\n"
            "    for _ in range(4):\n"
            "        time.sleep(0.3); advance(loss=1.0)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"SUITE_PROGRESS_SECONDS": "0.25", "PATH": ""}, timeout=60)
    lines = [line for line in done.stderr.splitlines() if line.startswith("epoch 1/1:")]
    assert [line.split(" (")[0] for line in lines] == [
        "epoch 1/1: 1/4", "epoch 1/1: 2/4", "epoch 1/1: 3/4", "epoch 1/1: 4/4"], done.stderr
    assert "━" not in done.stderr  # no bar drawn into the log
