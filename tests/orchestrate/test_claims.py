"""Claims: two benches of one plan started at the same moment train every run once, and a
lost claim leaves nothing behind (suite.job.claims)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

SUITE = str(Path(sys.executable).parent / "suite")

# Three rows, one seed, tiny runs: what the issue's report started twice ("a 3-row plan ends
# with 6 FINISHED runs").
PLAN = """
description = "three tiny rows"
experiment = "plan-claims"
seeds = [0]
[defaults]
dataset = "synthetic"
[defaults.set]
pretrained = "none"
train = { epochs = 1, batch_size = 4, eval_batch_size = 8 }
data = { num_train = 8, num_val = 4, num_test = 8 }
[[rows]]
label = "Zero-shot"
method = "zeroshot"
[[rows]]
label = "LoRA"
method = "lora"
[[rows]]
label = "ToMe"
method = "tome"
"""


def start_bench(cwd: Path, name: str) -> subprocess.Popen:
    out = (cwd / f"{name}.log").open("w")
    return subprocess.Popen([SUITE, "bench", "claims.toml", "--threads", "1"], cwd=cwd,
                            stdout=out, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1",
                                 "SUITE_CLAIM_SETTLE": "2"})


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_benches_started_together_train_every_run_once(tmp_path):
    (tmp_path / "claims.toml").write_text(textwrap.dedent(PLAN))
    first, second = start_bench(tmp_path, "first"), start_bench(tmp_path, "second")
    codes = [first.wait(timeout=900), second.wait(timeout=900)]
    logs = [(tmp_path / f"{n}.log").read_text() for n in ("first", "second")]
    assert all(code in (0, 1) for code in codes), logs  # 1: a bench that left runs to the other

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("plan-claims")
    runs = client.search_runs([experiment.experiment_id])
    finished = [r for r in runs if r.info.status == "FINISHED"]
    digests = [r.data.tags["config_digest"] for r in finished]
    assert len(finished) == 3 and len(set(digests)) == 3, [
        (r.data.tags["plan_row"], r.info.status) for r in runs]
    assert all(r.info.status == "FINISHED" for r in runs)  # a lost claim leaves no run
    # between them the two benches trained each row once and saw the other's runs as busy
    trained = sum(log.count(": finished, run ") for log in logs)
    assert trained == 3, logs


def test_a_planned_run_already_held_is_not_started(tmp_path, monkeypatch):
    """Step 1 of a claim: a live RUNNING run of the digest refuses a second start."""
    from suite.errors import RunClaimed
    from suite.job import claims, tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.client(uri)
    experiment = tracking.open_experiment(uri, "claims")
    held = client.create_run(experiment, tags={claims.DIGEST_TAG: "abc"})
    claims.check_new(client, experiment, "other")  # another digest: free
    with pytest.raises(RunClaimed, match="abc is started as run"):
        claims.check_new(client, experiment, "abc")
    client.set_terminated(held.info.run_id, "KILLED")
    claims.check_new(client, experiment, "abc")  # stopped: free to start anew


def test_of_two_new_runs_the_smaller_id_wins(tmp_path):
    """Step 3: both contenders see both runs and agree on one."""
    from suite.errors import RunClaimed
    from suite.job import claims, tracking
    from suite.job.ownership import Owner

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.client(uri)
    experiment = tracking.open_experiment(uri, "claims")
    owner = Owner.of_this_process().tags()
    ids = sorted(client.create_run(experiment, tags={claims.DIGEST_TAG: "d", **owner}).info.run_id
                 for _ in range(2))
    claims.contest_new(client, experiment, "d", ids[0], settle=0)
    with pytest.raises(RunClaimed, match="won the claim"):
        claims.contest_new(client, experiment, "d", ids[1], settle=0)


def test_resuming_a_run_another_process_claimed_a_moment_ago_is_refused(tmp_path):
    from suite.errors import RunClaimed
    from suite.job import claims, tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.client(uri)
    experiment = tracking.open_experiment(uri, "claims")
    run_id = client.create_run(experiment, tags={claims.DIGEST_TAG: "d"}).info.run_id
    client.set_terminated(run_id, "KILLED")
    claims.claim_resume(client, run_id, settle=0)  # ours now
    assert client.get_run(run_id).data.tags[claims.CLAIM_TAG] == claims.token()
    parent = os.getppid()  # a live process that is not this one
    import psutil

    started = psutil.Process(parent).create_time()
    client.set_tag(run_id, claims.CLAIM_TAG, f"{parent}@{os.uname().nodename}@{started:.2f}")
    with pytest.raises(RunClaimed, match="being resumed by"):
        claims.claim_resume(client, run_id, settle=0)
