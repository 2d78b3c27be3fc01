"""Ranks from SLURM: ``srun -n N suite run`` makes N processes of one run, each reading its
rank and the world from SLURM's variables; torchrun's variables win inside a job."""

import os

import pytest

from suite.job import distributed
from suite.job.distributed import Processes, first_host, from_environment, rendezvous

SLURM_STEP = {"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1",
              "SLURM_LOCALID": "1", "SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "node[7-8]"}


@pytest.fixture
def clean_env(monkeypatch):
    """A copy of the environment without rank variables; rendezvous() writes into it, and
    the real one is untouched (a leaked WORLD_SIZE would make later runs wait for peers)."""
    names = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS",
             *SLURM_STEP)
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k not in names})
    return monkeypatch


def test_a_two_task_step_gives_rank_world_and_local_rank(clean_env):
    for key, value in SLURM_STEP.items():
        clean_env.setenv(key, value)
    assert from_environment() == Processes(rank=1, world=2, local_rank=1)


def test_the_batch_script_and_one_task_steps_are_one_process(clean_env):
    clean_env.setenv("SLURM_NTASKS", "4")  # the batch script of a 4-task job: not a step
    clean_env.setenv("SLURM_PROCID", "0")
    assert from_environment() == distributed.SINGLE
    clean_env.setenv("SLURM_STEP_ID", "0")
    clean_env.setenv("SLURM_STEP_NUM_TASKS", "1")
    assert from_environment() == distributed.SINGLE


def test_torchrun_inside_a_job_wins(clean_env):
    for key, value in SLURM_STEP.items():
        clean_env.setenv(key, value)
    clean_env.setenv("WORLD_SIZE", "4")
    clean_env.setenv("RANK", "3")
    clean_env.setenv("LOCAL_RANK", "3")
    assert from_environment() == Processes(rank=3, world=4, local_rank=3)


def test_rendezvous_on_the_first_node_with_a_port_from_the_job(clean_env):
    for key, value in SLURM_STEP.items():
        clean_env.setenv(key, value)
    rendezvous(from_environment())
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("node7", "24242")
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == (
        "1", "2", "1")


@pytest.mark.parametrize(("nodes", "first"), [
    ("gpu1", "gpu1"), ("node[3-5,9],gpu1", "node3"), ("node[12]", "node12"), ("a,b", "a")])
def test_first_host_of_a_node_list(nodes, first):
    assert first_host(nodes) == first
