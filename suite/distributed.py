"""Data-parallel training under torchrun: one process per GPU (or N CPU processes, with gloo).

``torchrun --nproc_per_node N $(which suite) run ...`` starts N copies of the run. Each process
holds the whole model and takes its contiguous share of every global batch
(``train.batch_size`` stays the global batch). The contrastive loss needs every pair of the
global batch, so each process gathers the others' embeddings (without their gradients, which
live in the other processes) beside its own, computes the same global loss, and back-propagates
it through its own embeddings; the sum of these gradients over the processes is the gradient of
the global loss, so training follows the single-process run up to float summation order.
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
    """The torchrun variables (RANK, WORLD_SIZE, LOCAL_RANK); one process without them."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    return Processes(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


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
    """Every process's rows in rank order; only this process's rows carry gradients."""
    if not processes.enabled:
        return local
    parts = [torch.empty_like(local) for _ in range(processes.world)]
    dist.all_gather(parts, local.detach().contiguous())
    parts[processes.rank] = local
    return torch.cat(parts)


def sum_gradients(params: list[torch.nn.Parameter], processes: Processes) -> None:
    """Add up every process's gradients, in one flat all-reduce."""
    grads = [p.grad for p in params if p.grad is not None]
    if not processes.enabled or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()
