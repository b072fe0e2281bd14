"""Multi-process SVI on torch DDP: the process group, each rank's minibatch, the reduced loss.

    torchrun --nproc_per_node 2 experiments/train_svi.py --distributed ...

Pyro's documented path (its `svi_lightning.py` example): the ELBO is a module holding model and
guide (`ELBOModule`), parameters are module-local (`pyro.settings.set(module_local_params=True)`),
one loss call sets them up, then `DistributedDataParallel` wraps the ELBO module and averages
the gradients of every rank's loss in its backward pass. So that every rank holds the same
parameters after every step, every rank takes the same optimiser step on the same averaged,
clipped gradients.

Batches: every rank draws the same global batch of `size` x B windows from the shared, seeded
sampler and trains on its own slice (rank r: rows r·B .. (r+1)·B - 1). The N ranks together
therefore see exactly the batch a single process with batch size N·B sees, and the mean of their
losses (each in nats per token of its slice) is that process's loss. Routing samples alpha are
drawn on each rank from its own torch stream (seed + rank · 2^32), so the Monte Carlo noise of
the ranks is independent; with a deterministic router (`none`, `fixed-*`) the run equals the
single process up to the order of floating-point sums.

Backends: gloo on the CPU, nccl on CUDA (rank r on device LOCAL_RANK). Rank 0 alone writes the
run folder; metrics are reduced across ranks (the loss) or computed on the global batch (the
routing statistics, the same on every rank).

Signals: a SIGINT or SIGTERM to any rank is shared after every step (`agree_stop`), so every rank
stops after the same step; rank 0 saves one checkpoint holding every rank's random states
(`gather`), and `resume` under torchrun at the same world size continues it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..data.batches import Batch

TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    rank: int  # this process, 0 .. size - 1
    size: int  # processes in the group (torchrun's WORLD_SIZE)
    local_rank: int  # this process on its machine (its CUDA device)
    backend: str  # "gloo" or "nccl"

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes and prints."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_ENV)


def init_world(device: str) -> World:
    """Join the process group torchrun set up (gloo on the CPU, nccl on CUDA); ValueError when
    the process was not started by torchrun. Returns after every rank has joined."""
    if not launched_by_torchrun():
        missing = [name for name in TORCHRUN_ENV if name not in os.environ]
        raise ValueError(
            f"a distributed run needs torchrun's environment ({', '.join(missing)} unset): "
            "torchrun --nproc_per_node N experiments/train_svi.py --distributed ..."
        )
    cuda = device.startswith("cuda")
    local_rank = int(os.environ["LOCAL_RANK"])
    if cuda:
        torch.cuda.set_device(local_rank)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    world = World(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    dist.barrier()
    return world


def close_world() -> None:
    """Leave the process group (nothing when there is none)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The torch seed of a rank's routing samples: distinct per (seed, rank), rank 0's is seed."""
    return seed + (rank << 32)


def shard(batch: Batch, world: World | None) -> Batch:
    """This rank's rows of a global batch [size · B, T] (without a world: all of it)."""
    if world is None:
        return batch
    if batch.x.shape[0] % world.size:
        raise ValueError(
            f"a global batch of {batch.x.shape[0]} rows does not split {world.size} ways"
        )
    rows = batch.x.shape[0] // world.size
    part = slice(world.rank * rows, (world.rank + 1) * rows)
    return Batch(*(None if t is None else t[part] for t in batch))


def wrap(elbo: torch.nn.Module, world: World, find_unused: bool) -> DistributedDataParallel:
    """DDP around the ELBO module, after its set-up call. `find_unused`: some parameters take no
    part in the loss (a fixed prior's guide network), which DDP must be told."""
    device_ids = [world.local_rank] if world.backend == "nccl" else None
    return DistributedDataParallel(elbo, device_ids=device_ids, find_unused_parameters=find_unused)


def agree_stop(signum: int | None, world: World | None) -> int | None:
    """The signal any rank received (the largest number if several), the same on every rank;
    one all-reduce of one integer per step (without a world: `signum`)."""
    if world is None:
        return signum
    flag = torch.tensor([signum or 0], dtype=torch.int64)
    if world.backend == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag) or None


def gather(obj: object, world: World | None) -> list[object]:
    """Every rank's `obj`, in rank order, on every rank (without a world: [obj])."""
    if world is None:
        return [obj]
    out: list[object] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def mean_across(value: torch.Tensor, world: World | None) -> float:
    """The mean over ranks of a scalar tensor, the same float on every rank (without a world:
    the value)."""
    if world is None:
        return value.item()
    total = value.detach().clone().reshape(1)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return float(total) / world.size
