"""A sweep worker killed mid-trial leaves no MLflow run RUNNING: the trial records its run as
the run opens, and when the trial is failed because its worker is gone, its run ends KILLED
with the tags ``abandoned`` and ``worker_gone``. (The real kill -9 is in
test_sweep_workers.py.)"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import optuna
import psutil
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from suite.job import engine, ownership, tracking
from suite.job.config import apply_overrides, base_for, parse_sets
from suite.orchestrate import sweep


def dead_worker() -> ownership.Owner:
    """The owner record of a worker process that has ended."""
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(finished.pid).create_time()
    finished.wait()
    return ownership.Owner(finished.pid, socket.gethostname(), started, time.time())


def test_a_gone_workers_trial_ends_its_mlflow_run(store, tmp_path):
    client = MlflowClient(store)
    experiment = tracking.open_experiment(store, "tvr-suite")
    dead, me = dead_worker(), ownership.Owner.of_this_process()
    left = client.create_run(experiment, tags=dead.tags()).info.run_id
    live = client.create_run(experiment, tags=me.tags()).info.run_id
    study = optuna.create_study(storage=sweep.open_storage(str(tmp_path / "s.journal")))
    killed, alive, unopened = (study.ask() for _ in range(3))
    for trial, worker, run_id in ((killed, dead, left), (alive, me, live)):
        trial.set_user_attr("worker", worker.tags())
        trial.set_user_attr("mlflow_run_id", run_id)
    unopened.set_user_attr("worker", dead.tags())  # killed before its MLflow run opened

    assert sweep.fail_abandoned_trials(study, store) == [killed.number, unopened.number]
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.FAIL]
    run = client.get_run(left)
    assert run.info.status == "KILLED"
    assert run.data.tags["abandoned"] == "true"
    assert run.data.tags["worker_gone"] == f"{dead.pid}@{socket.gethostname()}"
    assert client.get_run(live).info.status == "RUNNING"  # a live worker's trial: left alone


def test_a_trial_records_its_mlflow_run_as_the_run_opens(tmp_path, monkeypatch):
    """Recorded before anything trains, so a worker killed mid-trial leaves the id behind."""
    from methods.registry import get

    study = optuna.create_study(storage=sweep.open_storage(str(tmp_path / "s.journal")))
    trial = study.ask()

    def killed_mid_trial(config, uri, **options):
        options["on_open"]("0123abcd")
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "run", killed_mid_trial)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_trial(trial, base_for("lora", "synthetic"), get("lora"), "s", None)
    assert study.trials[0].user_attrs["mlflow_run_id"] == "0123abcd"


@pytest.mark.slow
def test_on_open_is_called_with_the_open_run(store):
    config = apply_overrides(base_for("zeroshot", "synthetic"), parse_sets(
        ["pretrained=null", "train.epochs=0", "data.num_train=8", "data.num_val=4",
         "data.num_test=8", "train.eval_batch_size=8"]))
    seen = []
    result = engine.run(config, store, show_progress=False, checkpoints=None,
                        on_open=lambda run_id: seen.append(
                            (run_id, MlflowClient(store).get_run(run_id).info.status)))
    assert seen == [(result.run_id, "RUNNING")]


def test_a_killed_worker_not_yet_reaped_is_gone(tmp_path):
    """A worker killed outright is a zombie until its parent reaps it (``suite sweep --workers``
    waits on its workers in turn): it is gone all the same, or the study waits for its trial
    forever."""
    import signal

    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        owner = ownership.Owner(worker.pid, socket.gethostname(),
                                psutil.Process(worker.pid).create_time(), time.time())
        study = optuna.create_study(storage=sweep.open_storage(str(tmp_path / "s.journal")))
        study.ask().set_user_attr("worker", owner.tags())
        assert not owner.gone() and sweep.fail_abandoned_trials(study) == []
        worker.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while psutil.Process(worker.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the killed worker did not become a zombie"
            time.sleep(0.01)
        assert owner.gone()
        assert sweep.fail_abandoned_trials(study) == [0]
    finally:
        worker.kill()
        worker.wait()
