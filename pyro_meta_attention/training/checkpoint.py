"""The checkpoint of a run: network, guide, Pyro param store and config in one file."""

from __future__ import annotations

from pathlib import Path

import pyro
import torch

from ..config import RunConfig
from .build import build
from .run_dir import versions


def save_checkpoint(path: Path, config: RunConfig, model, guide, step: int) -> None:
    """Network (inside the model), guide, Pyro param store and config, in one file."""
    torch.save(
        {
            "config": config.to_dict(),
            "step": step,
            "model": model.state_dict(),
            "guide": guide.state_dict(),
            "param_store": pyro.get_param_store().get_state(),
            "versions": versions(),
        },
        path,
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild (config, model, guide) from a checkpoint; the param store is cleared and restored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location=map_location, weights_only=False)
    config = RunConfig.from_dict(state["config"])
    pyro.clear_param_store()
    pyro.get_param_store().set_state(state["param_store"])
    model, guide = build(config)
    model.load_state_dict(state["model"])
    guide.load_state_dict(state["guide"])
    return config, model.to(map_location), guide.to(map_location)
