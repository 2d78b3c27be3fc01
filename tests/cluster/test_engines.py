"""Each engine really works: jobs run on Slurm and sacct knows them, PostgreSQL stores an Optuna
study, the MLflow server keeps params, metrics and artifacts; stop() ends what start() began."""

from __future__ import annotations

import operator
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from engines import Engine, MlflowServer, Slurm, group_members


def sh(*argv: str, cwd: Path | None = None) -> str:
    """Run a client command (SLURM_CONF is exported by the `slurm` fixture); its stdout."""
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120,
                          cwd=cwd).stdout


def eventually(value: Callable[[], str], expected: str, timeout: float = 30) -> str:
    """Poll `value` until it equals `expected` (sacct learns a job's end asynchronously)."""
    deadline = time.monotonic() + timeout
    while (got := value()) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    return got


def test_sbatch_job_completes_and_sacct_knows_it(slurm: Slurm, tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    job_id = sh("sbatch", "--wait", "--parsable", f"--partition={slurm.partition}",
                f"--output={out}", "--wrap", "echo ran on $SLURM_JOB_PARTITION").strip()
    assert out.read_text().strip() == f"ran on {slurm.partition}"
    state = eventually(lambda: sh("sacct", "-j", job_id, "-X", "-n", "--parsable2",
                                  "-o", "State").strip(), "COMPLETED")
    assert state == "COMPLETED"


def test_srun_runs_two_tasks(slurm: Slurm) -> None:
    out = sh("srun", "-n", "2", f"--partition={slurm.partition}",
             "sh", "-c", "echo $SLURM_PROCID")
    assert sorted(out.split()) == ["0", "1"]


def test_submitit_job_returns_and_reads_its_state_from_sacct(slurm: Slurm,
                                                             tmp_path: Path) -> None:
    import submitit

    executor = submitit.AutoExecutor(folder=tmp_path)
    assert executor.cluster == "slurm"
    executor.update_parameters(slurm_partition=slurm.partition, timeout_min=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        job = executor.submit(operator.add, 2, 3)
        assert job.result() == 5
        state = eventually(lambda: job.state, "COMPLETED")
    assert state == "COMPLETED"
    assert not [w for w in caught if "sacct" in str(w.message)]


def test_postgres_db_is_fresh_and_keeps_an_optuna_study(postgres_db: str) -> None:
    import optuna
    import psycopg

    with psycopg.connect(postgres_db) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
    storage = postgres_db.replace("postgresql://", "postgresql+psycopg://", 1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1) ** 2, n_trials=1)
    again = optuna.load_study(storage=storage, study_name="s")
    assert [t.params for t in again.trials] == [study.trials[0].params]


def test_mlflow_server_keeps_params_metrics_and_serves_artifacts(
        mlflow_server: MlflowServer, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri)
    experiment = client.create_experiment("engines")
    run = client.create_run(experiment)
    client.log_param(run.info.run_id, "lr", "0.1")
    client.log_metric(run.info.run_id, "r1", 42.5, step=3)
    note = tmp_path / "note.txt"
    note.write_text("hello")
    client.log_artifact(run.info.run_id, str(note))

    back = client.get_run(run.info.run_id)
    assert back.data.params == {"lr": "0.1"}
    assert back.data.metrics == {"r1": 42.5}
    assert back.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server
    assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["note.txt"]
    stored = list(mlflow_server.artifacts.rglob("note.txt"))
    assert [p.read_text() for p in stored] == ["hello"]


def test_stop_ends_the_group_and_removes_the_folder(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "engine")
    # a shell that ignores SIGTERM (so stop needs SIGKILL) and leaves a child in its group
    daemon = engine.spawn("stubborn", ["sh", "-c", "trap '' TERM; sleep 60 & wait"])
    time.sleep(0.5)
    assert len(group_members(daemon.pid)) == 2
    daemon.stop(timeout=1)
    assert group_members(daemon.pid) == []
    engine.stop()
    assert not engine.dir.exists()
