"""Run folders: config.json, metrics.jsonl, summary.json and a loadable checkpoint.pt."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

from .config import RunConfig

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.pt"


def versions() -> dict[str, str]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpy": np.__version__,
    }


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_config(out: Path, config: RunConfig, extra: dict[str, Any]) -> None:
    write_json(out / CONFIG_FILE, {"config": config.to_dict(), "versions": versions(), **extra})


def append_metrics(out: Path, row: dict[str, Any]) -> None:
    with (out / METRICS_FILE).open("a") as f:
        f.write(json.dumps(row) + "\n")


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
    from .infer import build

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
