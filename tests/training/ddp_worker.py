"""One rank of the 2-process DDP test (tests/training/test_distributed.py), started by torchrun:

    torchrun --standalone --nproc_per_node 2 tests/training/ddp_worker.py OUT

Trains the `none` and the compute-dirichlet smoke configs in float64 with `fit(world=...)`,
into OUT/<prior> and OUT/<prior>-tensorboard (every rank is given the folders; rank 0 alone
may write them), recording every
parameter after every step, and saves them with the metrics rows to OUT/<prior>-rank<r>.pt.
"""

import sys
from pathlib import Path

import pyro
import torch

import pyro_meta_attention.training.svi as svi
from pyro_meta_attention.training.distributed import close_world, init_world

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddp_reference import PRIORS, config_for, recorder  # noqa: E402


def main(out: Path) -> None:
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    world = init_world("cpu")
    step = svi._svi_step
    try:
        for prior in PRIORS:
            pyro.settings.set(module_local_params=True)
            steps, svi._svi_step = recorder(step)
            config = config_for(prior, per_rank=True)
            board = out / f"{prior}-tensorboard"  # every rank is given it; rank 0 alone writes
            result = svi.fit(
                config, out=out / prior, progress=False, world=world, tensorboard=board
            )
            saved = {"params": steps, "history": result.history, "summary": result.summary}
            torch.save(saved, out / f"{prior}-rank{world.rank}.pt")
    finally:
        close_world()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
