"""Safe in parallel: stores created race-free, sweep workers that draw different trials, runs
owned by one process at a time (issue 8, items 11-13). "At once" means real processes."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from tiny_runs import TINY_DATA, json_summary
from typer.testing import CliRunner

from suite.cli import app
from suite.job import ownership, tracking
from suite.orchestrate import sweep

runner = CliRunner()
SUITE = str(Path(sys.executable).parent / "suite")
TINY_RUN = ["--method", "lora", "--pretrained", "none", "--epochs", "1", "--batch-size", "4",
            *TINY_DATA]
TINY_SWEEP = ["--method", "lora", "--set", "pretrained=null", "--set", "train.epochs=1",
              "--set", "train.batch_size=4", *TINY_DATA]


def start(args, cwd):
    """A ``suite`` process in ``cwd``, one thread (two share this machine's cores)."""
    return subprocess.Popen([SUITE, *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def finish(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return json_summary(out)


# The same moment in several processes: each imports, says "ready", then waits for a file.
AT_ONCE = """
import sys, time
from pathlib import Path
{imports}
print("ready", flush=True)
while not Path(sys.argv[1]).exists():
    time.sleep(0.001)
{call}
"""


def at_once(tmp_path, count, imports, call):
    """Run ``call`` in ``count`` processes released together; their stdout lines."""
    go = tmp_path / "go"
    code = AT_ONCE.format(imports=imports, call=call)
    processes = [subprocess.Popen([sys.executable, "-c", code, str(go)], cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(count)]
    for process in processes:
        assert process.stdout.readline().strip() == "ready", process.stderr.read()[-2000:]
    go.touch()
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        outputs.append(out.strip())
    return outputs


# Item 11: stores and experiments


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_runs_started_at_once_in_a_fresh_folder_both_finish(tmp_path):
    """Both use the default store, mlflow.db here, which neither finds (before: one crashed in
    MLflow's first migration and its run was lost)."""
    processes = [start(["run", *TINY_RUN, "--json"], tmp_path) for _ in range(2)]
    ids = [finish(p)["run_id"] for p in processes]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(set(ids)) == 2
    assert [client.get_run(i).info.status for i in ids] == ["FINISHED", "FINISHED"]
    assert (tmp_path / "mlflow.db.lock").is_file()


@pytest.mark.slow
@pytest.mark.subprocess
def test_five_processes_create_one_experiment_at_once(tmp_path):
    """Five processes open a store that does not exist yet and create the same experiment in
    the same millisecond (before: three of five crashed)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ids = at_once(tmp_path, 5, "from suite.job.tracking import open_experiment",
                  f"print(open_experiment({uri!r}, 'shared'))")
    client = MlflowClient(uri)
    assert ids == [client.get_experiment_by_name("shared").experiment_id] * 5
    assert [e.name for e in client.search_experiments()].count("shared") == 1


@pytest.mark.slow
def test_an_experiment_created_meanwhile_is_read_not_created_again(tmp_path, monkeypatch):
    """A server store has no file to lock: losing the race to create an experiment reads the
    winner's instead of failing."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    winner = MlflowClient(uri).create_experiment("shared")
    lookups = []
    original = MlflowClient.get_experiment_by_name

    def not_yet_the_first_time(self, name):
        lookups.append(name)
        return None if len(lookups) == 1 else original(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", not_yet_the_first_time)
    assert tracking.open_experiment(uri, "shared") == winner
    assert len(lookups) == 2


@pytest.mark.parametrize("uri, lock", [
    ("sqlite:///mlflow.db", "mlflow.db.lock"),
    ("sqlite:////abs/store/mlflow.db", "/abs/store/mlflow.db.lock"),
    ("sqlite:///runs.db?timeout=20", "runs.db.lock"),
    ("./mlruns", "mlruns.lock"),
    ("file:///abs/mlruns", "/abs/mlruns.lock"),
    ("http://127.0.0.1:5000", None),
    ("postgresql://user@db/mlflow", None),
])
def test_local_stores_are_locked_beside_their_file(uri, lock):
    assert tracking.store_lock_path(uri) == (None if lock is None else Path(lock))


@pytest.mark.slow
@pytest.mark.subprocess
def test_workers_open_a_new_sqlite_optuna_storage_at_once(tmp_path):
    """Several workers open a study in a SQLite storage that does not exist yet (before: all
    but one failed in the storage's first migration)."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    names = at_once(tmp_path, 4, "from suite.orchestrate.sweep import open_study",
                    f"print(open_study('s', {url!r}, 'lora', 'synthetic').study_name)")
    assert names == ["s"] * 4
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["s"]


# Item 12: sweep workers


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_sweeps_started_at_once_share_the_study_and_draw_different_trials(tmp_path):
    """Two `suite sweep` processes in a fresh folder, default storage (optuna.journal here),
    same study, same seed: both finish and their trials drew different parameters (before:
    the sampler was seeded with seed + len(study.trials), the same in both)."""
    processes = [start(["sweep", *TINY_SWEEP, "--trials", "1", "--json"], tmp_path)
                 for _ in range(2)]
    summaries = [finish(p) for p in processes]
    assert all(s["storage"] == "optuna.journal" for s in summaries)
    storage = sweep.open_storage(str(tmp_path / "optuna.journal"))
    trials = optuna.load_study(study_name="lora-synthetic", storage=storage).trials
    assert sorted(t.number for t in trials) == [0, 1]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert trials[0].params != trials[1].params
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [client.get_run(t.user_attrs["mlflow_run_id"]) for t in trials]
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]


def test_a_trial_draws_from_the_seed_and_its_number():
    def drawn(seed, number):
        trial = optuna.create_study(sampler=sweep.sampler_for(seed, number)).ask()
        return trial.suggest_float("x", 0, 1), trial.suggest_int("r", 1, 64)

    assert drawn(0, 3) == drawn(0, 3)
    assert len({drawn(0, n) for n in range(5)} | {drawn(1, 0)}) == 6


@pytest.mark.slow
def test_a_trial_below_the_median_is_pruned(tmp_path, monkeypatch):
    """--pruner median: five finished trials reached the best possible R-Sum (300) after one
    epoch; an untrained-from-random trial on 16 validation videos falls below it and is
    pruned after its first epoch: PRUNED in Optuna, KILLED with a pruned tag in MLflow."""
    from suite.cost.profiling import InferenceCost
    from suite.job import engine

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(engine, "measure_inference",
                        lambda *args, **kwargs: InferenceCost(0, 0, 0, 0, 0, 0, 0, 0))
    journal = str(tmp_path / "study.journal")
    study = optuna.create_study(study_name="p", storage=sweep.open_storage(journal),
                                direction="maximize")
    for _ in range(5):
        study.add_trial(optuna.trial.create_trial(value=300.0, intermediate_values={1: 300.0}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = runner.invoke(app, ["sweep", *TINY_SWEEP, "--set", "data.num_val=16",
                                 "--set", "train.epochs=2", "--trials", "1",
                                 "--study", "p", "--storage", journal, "--pruner", "median",
                                 "--tracking-uri", uri, "--json"])
    assert result.exit_code == 0, result.output
    assert "trial 5 pruned after epoch 1: val t2v R-Sum" in result.output
    summary = json_summary(result.stdout)
    assert (summary["pruned"], summary["pruned_now"], summary["complete_now"]) == (1, 1, 0)
    trial = optuna.load_study(study_name="p", storage=sweep.open_storage(journal)).trials[5]
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [1]
    run = MlflowClient(uri).search_runs(["1"], "tags.trial = '5'")[0]
    assert run.info.status == "KILLED"
    assert run.data.tags["pruned"] == "true" and run.data.tags["pruned_after_epoch"] == "1"
    assert run.data.metrics["val/t2v_rsum"] == pytest.approx(trial.intermediate_values[1])
    assert "test/t2v_rsum" not in run.data.metrics  # stopped before testing


@pytest.mark.subprocess
def test_trials_of_a_killed_worker_are_failed_not_left_running(tmp_path):
    """A worker killed outright leaves its trial RUNNING; the next sweep on this host fails it
    (its worker's pid and start time are gone) and leaves live workers' trials alone."""
    import psutil

    study = optuna.create_study(storage=sweep.open_storage(str(tmp_path / "s.journal")))
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    dead = ownership.Owner(finished.pid, socket.gethostname(),
                           psutil.Process(finished.pid).create_time(), time.time())
    finished.wait()
    killed, alive, remote, old = (study.ask() for _ in range(4))
    killed.set_user_attr("worker", dead.tags())
    alive.set_user_attr("worker", ownership.Owner.of_this_process().tags())
    remote.set_user_attr("worker", {**dead.tags(), "owner_host": "elsewhere"})
    assert sweep.fail_abandoned_trials(study) == [killed.number]
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING,
                      TrialState.RUNNING]  # old: no worker record, left alone
    assert old.number == 3


def test_pruners_are_optunas_over_the_run_epochs():
    assert isinstance(sweep.make_pruner("none", 4), optuna.pruners.NopPruner)
    assert isinstance(sweep.make_pruner("median", 4), optuna.pruners.MedianPruner)
    hyperband = sweep.make_pruner("hyperband", 4)
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner)
    assert (hyperband._min_resource, hyperband._max_resource) == (1, 4)


# Item 13: run ownership


def wait_for(condition, process, seconds=300, poll=0.1):
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll)


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_live_owner_keeps_its_run_and_a_killed_one_is_taken_over(store, tmp_path):
    """While a run trains, `--resume` is refused (one line, exit 2); after kill -9 the run is
    RUNNING with a dead owner, `suite abandoned --dry-run` says so, and `--resume` takes it
    over and finishes it."""
    process = start(["run", *TINY_RUN, "--epochs", "6", "--tracking-uri", store], tmp_path)
    wait_for(lambda: list(tmp_path.glob("checkpoints/*/last.pt")), process, poll=0.02)
    process.send_signal(signal.SIGSTOP)  # alive, holding its lock, until it is killed below
    # (stopped as it starts its second epoch, not while it writes to the store)
    run_id = next(tmp_path.glob("checkpoints/*/last.pt")).parent.name

    refused = runner.invoke(app, ["run", "--resume", run_id, "--tracking-uri", store])
    assert refused.exit_code == 2, refused.output
    [line] = refused.output.strip().splitlines()
    assert line.startswith(f"error: run {run_id} is being trained by pid {process.pid} on "
                           f"{socket.gethostname()}, last heartbeat ")
    assert line.endswith("wait for it to end or stop that process first")

    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    client = MlflowClient(store)
    assert client.get_run(run_id).info.status == "RUNNING"  # kill -9: nobody ended it
    listed = runner.invoke(app, ["abandoned", "--dry-run", "--tracking-uri", store])
    assert listed.exit_code == 0, listed.output
    assert f"run {run_id} " in listed.output and "abandoned, owner gone" in listed.output
    assert client.get_run(run_id).info.status == "RUNNING"  # --dry-run marks nothing

    resumed = runner.invoke(app, ["run", "--resume", run_id, "--tracking-uri", store, "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert f"run {run_id} was left RUNNING by pid {process.pid}" in resumed.output
    assert json_summary(resumed.stdout)["run_id"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["taken_over_from"] == f"{process.pid}@{socket.gethostname()}"
    assert run.data.tags["owner_pid"] == str(os.getpid())  # the new owner
    assert not (tmp_path / "checkpoints" / run_id).exists()


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_run_is_not_resumed_twice_at_once(store, tmp_path, monkeypatch):
    """A KILLED run resumed by one process: a second `--resume` meanwhile is refused, and the
    run's metrics are logged once per epoch."""
    from suite.data.loading import TrainingBatches

    original = TrainingBatches.set_epoch

    def ctrl_c_at_epoch_1(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        original(self, epoch)

    with monkeypatch.context() as patch:
        patch.setattr(TrainingBatches, "set_epoch", ctrl_c_at_epoch_1)
        runner.invoke(app, ["run", *TINY_RUN, "--epochs", "4", "--tracking-uri", store])
    client = MlflowClient(store)
    run_id = client.search_runs(["1"])[0].info.run_id
    assert client.get_run(run_id).info.status == "KILLED"

    saved = tmp_path / "checkpoints" / run_id / "last.pt"
    before = saved.stat().st_mtime_ns
    first = start(["run", "--resume", run_id, "--tracking-uri", store, "--json"], tmp_path)
    # Stopped as it starts training after its first epoch's checkpoint (not while it writes
    # to the store), it holds the run however fast it would have trained.
    wait_for(lambda: saved.is_file() and saved.stat().st_mtime_ns != before, first, poll=0.02)
    first.send_signal(signal.SIGSTOP)
    assert client.get_run(run_id).data.tags["owner_pid"] == str(first.pid)
    second = runner.invoke(app, ["run", "--resume", run_id, "--tracking-uri", store])
    first.send_signal(signal.SIGCONT)
    assert second.exit_code == 2, second.output
    assert f"is being trained by pid {first.pid}" in second.output
    assert len(second.output.strip().splitlines()) == 1

    assert finish(first)["run_id"] == run_id
    assert client.get_run(run_id).info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert sorted(steps) == list(range(4))


def test_resume_checks_the_store_before_reading_any_checkpoint(store, tmp_path, monkeypatch):
    from suite.job import checkpoint

    folder = tmp_path / "checkpoints" / "0123abcd"
    folder.mkdir(parents=True)
    (folder / "last.pt").write_bytes(b"not read")
    monkeypatch.setattr(checkpoint, "load", lambda *a: pytest.fail("checkpoint read"))
    monkeypatch.setattr(checkpoint, "read", lambda *a: pytest.fail("checkpoint read"),
                        raising=False)
    result = runner.invoke(app, ["run", "--resume", "0123abcd", "--tracking-uri", store])
    assert result.exit_code == 2 and "not in the MLflow store" in result.output
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt"]  # no lock made either


def fake_run(client, experiment_id, **tags):
    run = client.create_run(experiment_id, tags=tags)
    return run.info.run_id


@pytest.mark.slow
@pytest.mark.subprocess
def test_abandoned_marks_runs_whose_owner_is_gone(store):
    """Judged per owner: on this host by its process (pid and start time), from another host
    by its heartbeat's age. Only the gone ones are marked FAILED with abandoned=true."""
    import psutil

    client = MlflowClient(store)
    experiment = tracking.open_experiment(store, "tvr-suite")
    here, now = socket.gethostname(), time.time()
    me = ownership.Owner.of_this_process()
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_started = psutil.Process(finished.pid).create_time()
    finished.wait()

    def owner_tags(pid, host, started, heartbeat):
        return ownership.Owner(pid, host, started, heartbeat).tags()

    runs = {
        "alive": fake_run(client, experiment, **me.tags()),
        "dead": fake_run(client, experiment, **owner_tags(finished.pid, here, dead_started, now)),
        # the same pid, but another process (started earlier): a reused pid is not the owner
        "reused": fake_run(client, experiment, **owner_tags(os.getpid(), here,
                                                           me.started - 100, now)),
        "remote-fresh": fake_run(client, experiment, **owner_tags(1, "elsewhere", 0, now - 60)),
        "remote-stale": fake_run(client, experiment, **owner_tags(1, "elsewhere", 0,
                                                                 now - 3600)),
        "no-record": fake_run(client, experiment),
    }
    result = runner.invoke(app, ["abandoned", "--tracking-uri", store])
    assert result.exit_code == 0, result.output
    status = {name: client.get_run(i).info.status for name, i in runs.items()}
    assert status == {"alive": "RUNNING", "dead": "FAILED", "reused": "FAILED",
                      "remote-fresh": "RUNNING", "remote-stale": "FAILED",
                      "no-record": "RUNNING"}
    for name in ("dead", "reused", "remote-stale"):
        assert client.get_run(runs[name]).data.tags["abandoned"] == "true"
    assert "no owner record" in result.output and "owner alive" in result.output
    assert runner.invoke(app, ["abandoned", "--experiment", "nope",
                               "--tracking-uri", store]).exit_code == 2


@pytest.mark.slow
def test_the_heartbeat_is_refreshed_while_the_run_trains(store):
    client = MlflowClient(store)
    run_id = fake_run(client, tracking.open_experiment(store, "tvr-suite"))
    with ownership.heartbeat(store, run_id, interval=0.2):
        first = ownership.seconds_of(client.get_run(run_id).data.tags["heartbeat"])
        assert client.get_run(run_id).data.tags["owner_pid"] == str(os.getpid())
        time.sleep(1.5)
        assert ownership.seconds_of(client.get_run(run_id).data.tags["heartbeat"]) > first
