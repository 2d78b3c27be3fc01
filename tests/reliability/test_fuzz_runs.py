"""Fuzzing whole runs (slow): ``suite run`` trains with one setting of any known key set to a
plausible or hostile value. The run finishes, or the command ends in one line; either way no run
is left RUNNING and nothing is written outside the run's folders."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from fuzzing import (
    KNOWN_KEYS,
    LONG,
    METHODS,
    OTHER_KIND_VALUES,
    PLAUSIBLE_SET,
    files_under,
    one_line_failure,
)
from hypothesis import event, given, settings
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient
from tiny_runs import TINY_DATA
from typer.testing import CliRunner

from suite.cli import app

RUN = ["run", "--pretrained", "none", "--epochs", "1", "--batch-size", "4", *TINY_DATA]
RUN_FOLDERS = {"mlflow.db", "mlflow.db.lock", "mlartifacts", "checkpoints"}


@pytest.mark.slow
@given(method=st.sampled_from(METHODS), setting=st.one_of(
    PLAUSIBLE_SET, PLAUSIBLE_SET, st.tuples(st.sampled_from(KNOWN_KEYS), OTHER_KIND_VALUES)))
@settings(LONG, max_examples=int(os.environ.get("SUITE_FUZZ_RUN_EXAMPLES", "12")))
def test_a_run_with_any_setting_finishes_or_ends_in_one_line(method, setting):
    key, value = setting
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp)
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        store = f"sqlite:///{Path(tmp) / 'mlflow.db'}"  # MLflow keeps an engine per URI
        result = CliRunner().invoke(app, [*RUN, "--method", method, "--set", f"{key}={value}",
                                          "--tracking-uri", store])
        event("finished" if result.exit_code == 0 else f"exit {result.exit_code}")
        problem = one_line_failure(result.output.splitlines()[-1] if result.exit_code
                                   else result.output, result.exit_code)
        assert problem is None, (problem, key, value, result.output[-3000:])
        assert "Traceback" not in result.output
        if (Path(tmp) / "mlflow.db").exists():
            client = MlflowClient(store)
            runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
            assert all(r.info.status != "RUNNING" for r in runs), key
        assert {p.split("/")[0] for p in files_under(Path(tmp))} <= RUN_FOLDERS
