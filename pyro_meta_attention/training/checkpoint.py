"""The checkpoint of a run: config, step, network, guide, optimiser and RNG states in one file.

Only tensors and plain Python data are stored, and files are read with
`torch.load(weights_only=True)`: a checkpoint that carries any other object (a pickled
callable, say) is refused without running it. `read_checkpoint` checks a file and raises
`CheckpointError` (one line naming the file) for anything it cannot use; `load_checkpoint`
rebuilds (config, model, guide) from it. Writes are atomic (`run_dir.write_atomic`).
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch
from torch.torch_version import TorchVersion

from ..config import RunConfig
from .build import build
from .run_dir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    SUMMARY_FILE,
    RunDirError,
    read_json,
    versions,
    write_atomic,
)

SAFE = [TorchVersion]  # a str subclass that checkpoints written before plain metadata hold


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, unsafe, or not of this project."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path  # the file it was read from
    config: RunConfig  # the run's configuration
    step: int  # SVI steps done when it was written
    state: dict[str, Any]  # everything stored: model, guide, optimizer, rng, corpus, ...

    @property
    def finished(self) -> bool:
        """Whether every SVI step of the config was done."""
        return self.step >= self.config.train.steps

    @property
    def corpus(self) -> dict[str, Any] | None:
        """{"name", "path", "sha256"} of the training data (None: an older checkpoint)."""
        return self.state.get("corpus")


def save_checkpoint(path: Path, config: RunConfig, model, guide, step: int, **extra: Any) -> None:
    """Config, step, model (network + prior), guide and `extra` (tensors and plain data only:
    optimizer, rng, corpus, step_times), written atomically."""
    state = {
        "config": config.to_dict(),
        "step": step,
        "model": model.state_dict(),
        "guide": guide.state_dict(),
        "versions": versions(),
        **extra,
    }
    write_atomic(Path(path), lambda f: torch.save(state, f))


def _load(path: Path, map_location: str | torch.device) -> Any:
    try:
        with torch.serialization.safe_globals(SAFE):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(
                f"refused checkpoint {path}: it holds a Python object ({found.group(1)}), not "
                "only tensors and plain data; it was not run"
            ) from None
        raise CheckpointError(f"cannot read checkpoint {path}: not a torch file") from None
    except Exception as e:  # torch.load raises many types for a damaged file
        why = "empty" if path.stat().st_size == 0 else "not a torch file, or truncated"
        raise CheckpointError(
            f"cannot read checkpoint {path}: {why} ({type(e).__name__})"
        ) from None


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """The checkpoint in `path`, checked; CheckpointError (or FileNotFoundError) if unusable."""
    path = Path(path).expanduser()
    if path.is_dir():
        hint = f" (it holds {CHECKPOINT_FILE})" if (path / CHECKPOINT_FILE).is_file() else ""
        raise FileNotFoundError(f"{path} is a folder, not a checkpoint file{hint}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = _load(path, map_location)
    keys = ("config", "step", "model", "guide")
    if not isinstance(state, dict) or not all(k in state for k in keys):
        raise CheckpointError(
            f"{path} is not a checkpoint of this project (it needs {', '.join(keys)})"
        )
    try:
        config = RunConfig.from_dict(state["config"])
    except (ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {path} has a bad config: {e}") from None
    return Checkpoint(path, config, int(state["step"]), state)


def restore(checkpoint: Checkpoint, map_location: str | torch.device = "cpu"):
    """Fresh (model, guide) with the checkpoint's weights, on `map_location`."""
    model, guide = build(checkpoint.config)
    try:
        model.load_state_dict(checkpoint.state["model"])
        guide.load_state_dict(checkpoint.state["guide"])
    except (RuntimeError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {checkpoint.path}: weights do not match its config ({first})"
        ) from None
    return model.to(map_location), guide.to(map_location)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild (config, model, guide) from a checkpoint; Pyro's param store is cleared only once
    the file has been checked (model and guide keep their parameters themselves)."""
    checkpoint = read_checkpoint(path, map_location)
    model, guide = restore(checkpoint, map_location)
    pyro.clear_param_store()
    return checkpoint.config, model, guide


def check_resumable(run_dir: str | Path, world_size: int = 1) -> Checkpoint:
    """The checkpoint of a stopped run in `run_dir` that `world_size` processes can continue:
    RunDirError if there is none, the run is finished or was trained by another number of
    processes; CheckpointError if it cannot resume. Reads only (before a process group forms)."""
    run_dir = Path(run_dir).expanduser()
    if run_dir.is_file():
        raise RunDirError(f"resume takes the run folder, not a file: {run_dir.parent}")
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        raise RunDirError(f"{run_dir} holds no checkpoint to resume")
    checkpoint = read_checkpoint(path)
    if checkpoint.finished and (run_dir / SUMMARY_FILE).is_file():
        steps = checkpoint.config.train.steps
        raise RunDirError(f"{run_dir} is a finished run ({steps} steps); nothing to resume")
    if not checkpoint.finished and not {"rng", "optimizer"} <= set(checkpoint.state):
        raise CheckpointError(f"{path} has no optimiser and RNG state; it cannot be resumed")
    recorded = checkpoint.state.get("world_size")
    if recorded is None:  # a checkpoint from before world sizes were stored
        recorded = ((read_json(run_dir / CONFIG_FILE) or {}).get("distributed") or {}).get(
            "world_size", 1
        )
    if recorded != world_size:
        how = (
            "without torchrun"
            if recorded == 1
            else f"under torchrun --nproc_per_node {recorded} with --distributed"
        )
        raise RunDirError(
            f"{run_dir} was trained by {recorded} process(es), not {world_size}: resume it {how}"
        )
    return checkpoint


def continues(out: Path, config: RunConfig, sha256: str) -> bool:
    """Whether `out` holds a resumable, unfinished checkpoint of `config` on the data whose hash
    is `sha256`."""
    try:
        checkpoint = read_checkpoint(out / CHECKPOINT_FILE)
    except (CheckpointError, FileNotFoundError):
        return False
    same = checkpoint.config == config and (checkpoint.corpus or {}).get("sha256") == sha256
    return same and not checkpoint.finished and {"rng", "optimizer"} <= set(checkpoint.state)
