"""Damaged and unsafe checkpoint files, one per kind (tests of loading and of the scripts)."""

import os

import torch

from pyro_meta_attention.config import smoke_config
from pyro_meta_attention.training.build import build
from pyro_meta_attention.training.checkpoint import save_checkpoint

CONFIG = smoke_config()


class RunsCode:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def genuine(path):
    model, guide = build(CONFIG)
    save_checkpoint(path, CONFIG, model, guide, step=CONFIG.train.steps)
    return torch.load(path, weights_only=True)


def bad_checkpoint(kind: str, path):
    """Write a checkpoint file of the given kind of damage to `path`."""
    if kind == "pickled callable":
        state = genuine(path)
        torch.save(state | {"extra": RunsCode(path.parent / "MARKER")}, path)
    elif kind == "truncated":
        genuine(path)
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random bytes":
        path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    elif kind == "plain state_dict":
        torch.save(build(CONFIG)[0].state_dict(), path)
    elif kind == "unknown config field":
        state = genuine(path)
        state["config"]["train"]["bogus"] = 1
        torch.save(state, path)
    elif kind == "weights not matching the config":
        state = genuine(path)
        state["config"]["model"]["n_embd"] = 64
        torch.save(state, path)
    return path


BAD = {  # kind of damage -> what the one-line error says
    "pickled callable": "holds a Python object (posix.system)",
    "truncated": "not a torch file, or truncated",
    "text": "not a torch file",
    "empty": "empty",
    "random bytes": "not a torch file",
    "plain state_dict": "not a checkpoint of this project",
    "unknown config field": "unknown train config field(s): ['bogus']",
    "weights not matching the config": "weights do not match its config",
}
