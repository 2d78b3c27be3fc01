"""Data-parallel training under torchrun or srun: one process per GPU (or N CPU processes,
with gloo).

``torchrun --nproc_per_node N $(which suite) run ...`` starts N copies of the run, and so does
``srun -n N suite run ...`` in a SLURM job (ranks from SLURM's variables). Each process
holds the whole model, wrapped in torch's DistributedDataParallel, and takes its contiguous
share of every global batch (``train.batch_size`` stays the global batch). The contrastive loss
needs every pair of the global batch, so each process gathers every process's embeddings with
the differentiable ``torch.distributed.nn.functional.all_gather`` and computes the same global
loss. Its backward sums the N processes' gradients of their (identical) losses into each
process's own embeddings, N times the gradient of the global loss through them; DDP averages
the parameter gradients over the N processes (overlapped with the backward pass), which leaves
exactly the gradient of the global loss, so training follows the single-process run up to
float summation order.
Evaluation is shared the same way: each process embeds its share of the videos and captions,
and every process scores all of them, so all keep the same best epoch. Checkpoints, MLflow
logging and the inference timing happen in the main process (rank 0) only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from suite.errors import UserError

# Rank 0 sometimes works alone (pre-training the tiny backbone into the cache, writing a
# checkpoint) while the others wait at their next collective: allow for long waits.
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class Processes:
    """Where this process stands among the processes of a run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


SINGLE = Processes()


def from_environment() -> Processes:
    """torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK), else those of a SLURM job step
    of several tasks (``srun -n N suite run ...``: SLURM_PROCID, SLURM_STEP_NUM_TASKS,
    SLURM_LOCALID); one process without either."""
    env = os.environ
    if int(env.get("WORLD_SIZE", "1")) > 1:
        return Processes(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))
    if "SLURM_STEP_ID" in env and int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
        return Processes(int(env["SLURM_PROCID"]), int(env["SLURM_STEP_NUM_TASKS"]),
                         int(env.get("SLURM_LOCALID", "0")))
    return SINGLE


def rendezvous(processes: Processes) -> None:
    """Where the processes meet (``env://``): torchrun sets it; under srun the first node of
    the step and a port from the job id, unless MASTER_ADDR and MASTER_PORT are given."""
    env = os.environ
    if "MASTER_ADDR" in env and "MASTER_PORT" in env:
        return
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
    env.setdefault("MASTER_ADDR", first_host(nodes))
    env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
    env.setdefault("RANK", str(processes.rank))
    env.setdefault("WORLD_SIZE", str(processes.world))
    env.setdefault("LOCAL_RANK", str(processes.local_rank))


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``node[3-5,9],gpu1`` -> ``node3``."""
    head = nodelist.split(",")[0] if "[" not in nodelist.split(",")[0] else nodelist
    if "[" not in head:
        return head
    prefix, _, rest = head.partition("[")
    first = rest.split(",")[0].split("-")[0].rstrip("]")
    return prefix + first


def is_main_process() -> bool:
    return from_environment().main


def local_device(processes: Processes, device: torch.device) -> torch.device:
    """Under torchrun each process takes the GPU of its local rank."""
    if processes.enabled and device.type == "cuda":
        return torch.device("cuda", processes.local_rank)
    return device


def start(processes: Processes, device: torch.device, batch_size: int) -> None:
    """Join the process group (NCCL on CUDA, gloo on the CPU); no-op for one process."""
    if not processes.enabled or dist.is_initialized():
        return
    if batch_size % processes.world:
        raise UserError(f"batch size {batch_size} is not divisible by the {processes.world} "
                        f"processes; the global batch is split evenly")
    rendezvous(processes)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)


def barrier(processes: Processes) -> None:
    if processes.enabled:
        dist.barrier()


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def share(count: int, processes: Processes) -> range:
    """This process's contiguous share of ``count`` items (shares differ by at most one);
    all of them when there are fewer items than processes."""
    if count < processes.world:
        return range(count)
    return range(count * processes.rank // processes.world,
                 count * (processes.rank + 1) // processes.world)


def gather_rows(local: torch.Tensor, count: int, processes: Processes) -> torch.Tensor:
    """Every process's ``share`` of ``count`` rows, in order, on every process."""
    if not processes.enabled or count < processes.world:
        return local
    sizes = [len(share(count, Processes(rank, processes.world))) for rank in
             range(processes.world)]
    padded = local.new_zeros((max(sizes), *local.shape[1:]))
    padded[:len(local)] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])


def gather_batch(local: torch.Tensor, processes: Processes) -> torch.Tensor:
    """Every process's rows in rank order, differentiably: the backward pass returns to each
    process the sum over all processes of the gradient with respect to its rows."""
    if not processes.enabled:
        return local
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(local.contiguous()))


def data_parallel(model: torch.nn.Module, processes: Processes, device: torch.device
                  ) -> torch.nn.Module:
    """``model`` in DistributedDataParallel (gradients averaged over the processes during the
    backward pass); the model itself for one process."""
    if not processes.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # Methods may leave some trainable parameters out of a step (a search phase, a frozen
    # branch); unused ones are then found instead of hanging the reduction.
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
