"""The shipped demo checkpoint: a small model whose routing was learned, loadable in one call.

    from pyro_meta_attention import load_demo
    config, model, guide = load_demo()  # MQAR, routing recipe: queries to full, the rest local

`mqar-routing.pt` is the `mqar-routing` preset (MQAR, T = 64, w = 8, 4 pairs; all-full warm-up,
hard straight-through samples, compute-dirichlet lambda = 0.5) trained for its 2,000 steps at
seed 0 on one thread, without optimiser and random states. `mqar-routing.json` beside it holds
the command that regenerates it bit for bit on the machine that made it, the seed, the config,
the training summary and the file's sha256, which `load_demo` checks before loading.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..training.checkpoint import CheckpointError, load_checkpoint

HERE = Path(__file__).resolve().parent
DEMOS = ("mqar-routing",)  # the shipped checkpoints: <name>.pt beside <name>.json


def demo_path(name: str = "mqar-routing") -> Path:
    """The shipped checkpoint file of a demo."""
    if name not in DEMOS:
        raise ValueError(f"unknown demo {name!r}: the demos are {', '.join(DEMOS)}")
    return HERE / f"{name}.pt"


def demo_record(name: str = "mqar-routing") -> dict:
    """What `<name>.json` says of the checkpoint: command, seed, config, summary, sha256."""
    return json.loads(demo_path(name).with_suffix(".json").read_text())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_demo(name: str = "mqar-routing", map_location: str = "cpu"):
    """(config, model, guide) of a shipped demo, in eval mode, after checking its sha256."""
    path = demo_path(name)
    want = demo_record(name)["sha256"]
    if sha256(path) != want:
        raise CheckpointError(f"{path} is not the shipped file (sha256 differs from {want[:12]}…)")
    config, model, guide = load_checkpoint(path, map_location)
    return config, model.eval(), guide.eval()
