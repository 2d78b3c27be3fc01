"""Stores of finished runs for the report tests (made by report_runs, without training)."""

import pytest
from report_runs import log_comparison, log_plan


@pytest.fixture(scope="module")
def comparison_store(tmp_path_factory) -> str:
    return log_comparison(tmp_path_factory.mktemp("comparison"))


@pytest.fixture(scope="module")
def plan_store(tmp_path_factory) -> str:
    """The runs of ``suite bench tempme-ablation-components --dataset synthetic``."""
    return log_plan(tmp_path_factory.mktemp("plan"))
