"""The run folder: config.json, metrics.jsonl, summary.json beside checkpoint.pt.

Every run writes its config, seed, package versions and corpus hash (`write_config`) next to
its metrics, so that a result can be traced to what produced it.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

from ..config import RunConfig

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


def read_json(path: Path) -> Any:
    """The JSON in `path`, or None if there is no such file."""
    return json.loads(path.read_text()) if path.is_file() else None


def load_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's metrics.jsonl rows (step, loss, kl, routing_entropy, routing_share, ...)."""
    path = Path(run_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
