"""Data-parallel training: torchrun with two CPU processes (gloo) trains exactly what one
process trains on the same global batches."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from tiny_runs import TINY_DATA, json_summary

from suite.data.loading import TrainingBatches
from suite.data.synthetic import SyntheticConfig, make_split

ARGS = ["--method", "tempme", "--pretrained", "none", "--epochs", "2", "--batch-size", "4",
        *TINY_DATA, "--device", "cpu", "--json"]
BIN = Path(sys.executable).parent


def test_every_process_draws_its_share_of_the_same_global_batches():
    split = make_split(SyntheticConfig(num_train=24), "train")
    whole = list(TrainingBatches(split, "all", 8, seed=3))
    shares = [list(TrainingBatches(split, "all", 8, seed=3, rank=r, world=2)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == len(whole)
    for batch, first, second in zip(whole, *shares, strict=True):
        assert len(first) == len(second) == 4 and first + second == batch


def suite_run(store, *launcher):
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, str(BIN / "suite"), "run", *ARGS], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"run_id"') == 1  # only the main process prints
    return json_summary(done.stdout)["run_id"]


@pytest.mark.skipif(shutil.which("torchrun", path=str(BIN)) is None, reason="no torchrun")
def test_two_processes_train_the_same_weights_as_one(store, tmp_path):
    single = suite_run(store)
    parallel = suite_run(store, str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2")
    client = MlflowClient(store)
    run = client.get_run(parallel)
    assert run.info.status == "FINISHED" and run.data.tags["processes"] == "2"
    assert client.get_run(single).data.tags["processes"] == "1"
    assert client.get_run(parallel).data.metrics["test/t2v_rsum"] == pytest.approx(
        client.get_run(single).data.metrics["test/t2v_rsum"])
    for name in ("train/loss", "val/t2v_rsum", "val/t2v_MnR"):
        history = [sorted((m.step, m.value) for m in client.get_metric_history(r, name))
                   for r in (single, parallel)]
        assert [s for s, _ in history[0]] == [s for s, _ in history[1]] == [0, 1]
        assert [v for _, v in history[1]] == pytest.approx([v for _, v in history[0]], abs=1e-5)
    weights = [torch.load(client.download_artifacts(r, "trained_weights.pt", str(tmp_path / r)))
               for r in (single, parallel)]
    assert weights[0].keys() == weights[1].keys()
    # Adam turns float summation-order noise in near-zero gradients into visible steps of
    # single elements (measured: at most 0.2% of a tensor's norm; gradients not summed over
    # the processes: up to 150%), so whole tensors are compared. The gradient itself is
    # checked exactly in float64 below.
    for name, value in weights[0].items():
        assert (weights[1][name] - value).norm() / value.norm() < 1e-2, name


def gradient_worker(rank, world, init_file, out_folder):
    import torch.distributed as dist

    from suite.distributed import Processes, gather_batch, sum_gradients
    from suite.engine import symmetric_infonce

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    text_tower, video_tower, texts, videos = towers_and_batch()
    processes = Processes(rank, world, rank)
    share = slice(rank * len(texts) // world, (rank + 1) * len(texts) // world)
    text = gather_batch(torch.nn.functional.normalize(text_tower(texts[share]), dim=-1),
                        processes)
    video = gather_batch(torch.nn.functional.normalize(video_tower(videos[share]), dim=-1),
                         processes)
    symmetric_infonce(text, video, torch.tensor(10.0, dtype=torch.float64)).backward()
    params = [*text_tower.parameters(), *video_tower.parameters()]
    sum_gradients(params, processes)
    torch.save([p.grad for p in params], Path(out_folder) / f"{rank}.pt")
    dist.destroy_process_group()


def towers_and_batch():
    torch.manual_seed(0)
    text_tower = torch.nn.Linear(6, 5).double()
    video_tower = torch.nn.Linear(7, 5).double()
    return text_tower, video_tower, torch.randn(8, 6).double(), torch.randn(8, 7).double()


def test_summed_gradients_equal_the_single_process_gradient_of_the_global_batch(tmp_path):
    from suite.engine import symmetric_infonce

    torch.multiprocessing.spawn(gradient_worker, args=(2, str(tmp_path / "init"), str(tmp_path)),
                                nprocs=2)
    text_tower, video_tower, texts, videos = towers_and_batch()
    text = torch.nn.functional.normalize(text_tower(texts), dim=-1)
    video = torch.nn.functional.normalize(video_tower(videos), dim=-1)
    symmetric_infonce(text, video, torch.tensor(10.0, dtype=torch.float64)).backward()
    reference = [p.grad for p in (*text_tower.parameters(), *video_tower.parameters())]
    for rank in (0, 1):
        grads = torch.load(tmp_path / f"{rank}.pt")
        for grad, expected in zip(grads, reference, strict=True):
            torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)


def test_a_global_batch_that_does_not_split_evenly_is_refused(tmp_path):
    env = {**os.environ, "WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0"}
    done = subprocess.run([str(BIN / "suite"), "run", *ARGS], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: batch size 4 is not divisible by the 3 processes; the global batch is split "
        "evenly")


def rows_worker(rank, world, init_file, out_folder):
    import torch.distributed as dist

    from suite.distributed import Processes, gather_rows, share

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    processes = Processes(rank, world, rank)
    gathered = {}
    for count in (7, 1):  # uneven shares; fewer rows than processes
        rows = torch.arange(count * 3, dtype=torch.float32).view(count, 3)
        gathered[count] = gather_rows(rows[list(share(count, processes))], count, processes)
    torch.save(gathered, Path(out_folder) / f"rows{rank}.pt")
    dist.destroy_process_group()


def test_every_process_receives_every_share_of_an_evaluation_split(tmp_path):
    torch.multiprocessing.spawn(rows_worker, args=(2, str(tmp_path / "init"), str(tmp_path)),
                                nprocs=2)
    for rank in (0, 1):
        gathered = torch.load(tmp_path / f"rows{rank}.pt")
        for count in (7, 1):
            expected = torch.arange(count * 3, dtype=torch.float32).view(count, 3)
            torch.testing.assert_close(gathered[count], expected, rtol=0, atol=0)
