"""``suite sweep --workers N`` on one machine (the journal file): the workers share one goal,
no trial is repeated, the study ends with exactly the requested number of trials that count,
and a worker killed mid-trial leaves a FAIL that is not counted but replaced."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from tiny_runs import TINY_DATA

from suite.orchestrate import sweep

SUITE = str(Path(sys.executable).parent / "suite")
TINY_SWEEP = ["--method", "lora", "--set", "pretrained=null", "--set", "train.epochs=1",
              "--set", "train.batch_size=4", *TINY_DATA]


def start_sweep(cwd, *args):
    return subprocess.Popen([SUITE, "sweep", *TINY_SWEEP, *args, "--json"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def opened(trials):
    """The RUNNING trials whose MLflow run is open (its id recorded on the trial)."""
    return [t for t in trials if t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs]


def trials_of(cwd):
    storage = sweep.open_storage(str(cwd / "optuna.journal"))
    return optuna.load_study(study_name="lora-synthetic", storage=storage).trials


def worker_logs(cwd):
    """The workers' own logs, the ends that say why a worker stopped."""
    return "".join(f"\n--- {log.name}\n{log.read_text()[-4000:]}"
                   for log in sorted((cwd / "sweeps").glob("*/worker*.log")))


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_workers_share_the_goal_and_a_killed_worker_is_replaced(tmp_path):
    parent = start_sweep(tmp_path, "--trials", "3", "--workers", "2")
    # wait until both workers run a trial, then kill one whose trial's MLflow run is open
    deadline = time.monotonic() + 300
    workers, victim = [], None
    while time.monotonic() < deadline:
        workers = [p for p in psutil.Process(parent.pid).children(recursive=True)
                   if "--goal" in p.cmdline()]
        if len(workers) == 2 and (tmp_path / "optuna.journal").exists():
            trials = trials_of(tmp_path)
            running = opened(trials)
            if sum(t.state == TrialState.RUNNING for t in trials) == 2 and running:
                victim = int(running[0].user_attrs["worker"]["owner_pid"])
                break
        time.sleep(0.1)
    assert len(workers) == 2 and victim is not None, "the workers did not start"
    [killed] = [p for p in workers if p.pid == victim]
    killed.send_signal(signal.SIGKILL)
    out, err = parent.communicate(timeout=900)
    assert parent.returncode == 0, err[-3000:] + worker_logs(tmp_path)
    summary = json.loads(out[out.index("{"):])

    trials = trials_of(tmp_path)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(complete) == 3, [(t.number, t.state) for t in trials]
    assert len(failed) == 1 and "error" not in failed[0].user_attrs  # the killed one
    assert sweep.counted(optuna.load_study(
        study_name="lora-synthetic",
        storage=sweep.open_storage(str(tmp_path / "optuna.journal")))) == 3
    drawn = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(drawn)) == 3  # no trial repeated
    assert summary["complete"] == 3 and summary["complete_now"] == 3
    assert all(t.state != TrialState.RUNNING for t in trials)
    # The killed trial's MLflow run, recorded as it opened, is ended, not left RUNNING.
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(failed[0].user_attrs["mlflow_run_id"])
    assert failed[0].user_attrs["worker"]["owner_pid"] == str(victim)
    # Ended by whoever met it first: the sweep failing the trial (KILLED, worker_gone) or the
    # other worker's next run ending the experiment's orphans (FAILED, abandoned).
    if run.info.status == "KILLED":
        assert run.data.tags["worker_gone"].startswith(f"{victim}@")
    else:
        assert run.info.status == "FAILED" and run.data.tags["abandoned"] == "true"
    assert not client.search_runs([run.info.experiment_id], "attributes.status = 'RUNNING'")


def test_a_surplus_trial_is_failed_and_not_counted(tmp_path, monkeypatch):
    """Two workers take the last place at once: the later trial number gives way."""
    study = optuna.create_study(storage=sweep.open_storage(str(tmp_path / "s.journal")))
    study.tell(study.ask(), 1.0)  # one trial counts; the goal is two
    ask = study.ask

    def another_worker_asks_first():
        rival = ask()  # between this worker's look and its ask
        rival.set_user_attr("worker", sweep.ownership.Owner.of_this_process().tags())
        study.ask = ask
        return ask()

    study.ask = another_worker_asks_first
    waits = []

    def the_rival_finishes(seconds):  # this worker waits while the rival's trial may fail
        waits.append(seconds)
        study.tell(1, 1.0)

    monkeypatch.setattr(time, "sleep", the_rival_finishes)
    trials = sweep.asked_until(study, goal=2, poll=0.01)
    with pytest.raises(StopIteration):
        next(trials)  # the rival held the last place and finished it: this worker stops
    assert waits == [0.01]
    states = [(t.number, t.state, t.user_attrs.get("surplus")) for t in study.trials]
    assert states == [(0, TrialState.COMPLETE, None), (1, TrialState.COMPLETE, None),
                      (2, TrialState.FAIL, True)]
    assert sweep.counted(study) == 2


def test_counted_leaves_out_killed_and_surplus_trials(tmp_path):
    study = optuna.create_study(storage=sweep.open_storage(str(tmp_path / "s.journal")))
    done, errored, killed, surplus, pruned = (study.ask() for _ in range(5))
    study.tell(done, 1.0)
    errored.set_user_attr("error", "ValueError: bad knob")
    study.tell(errored, state=TrialState.FAIL)
    study.tell(killed, state=TrialState.FAIL)
    surplus.set_user_attr("surplus", True)
    study.tell(surplus, state=TrialState.FAIL)
    study.tell(pruned, state=TrialState.PRUNED)
    assert sweep.counted(study) == 3
