"""The run folder: config.json, metrics.jsonl, summary.json beside checkpoint.pt.

Every run writes its config, seed, package versions and corpus hash (`write_config`) next to
its metrics, so that a result can be traced to what produced it. Files are replaced atomically
(`write_atomic`: a temporary file in the same folder, then `os.replace`), so a kill mid-write
leaves the old file or the new one, never half of one.

`prepare_run_dir` decides what happens to a folder that already holds a run (`EXISTING`):
"refuse" it, "overwrite" it, or "resume" it; `check_writable` finds an unusable output folder
before any work is done.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyro
import torch

from ..config import RunConfig

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_FILE = "checkpoint.pt"
RUN_FILES = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, CHECKPOINT_FILE)
EXISTING = ("refuse", "overwrite", "resume")  # what fit does with a folder holding a run


class RunDirError(ValueError):
    """An output folder that cannot be used as asked (holds a run, not writable, ...)."""


def versions() -> dict[str, str]:
    """Interpreter, platform and package versions, as plain strings."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": str(torch.__version__),
        "pyro": str(pyro.__version__),
        "numpy": str(np.__version__),
    }


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write(f)` on a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


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


def keep_history(run_dir: Path, before: int) -> list[dict[str, Any]]:
    """Cut metrics.jsonl to the rows of steps < `before` (a resumed run logs the rest again)."""
    path = run_dir / METRICS_FILE
    rows = [r for r in load_history(run_dir) if r["step"] < before] if path.is_file() else []
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def holds_run(out: Path) -> bool:
    return any((out / name).exists() for name in RUN_FILES)


def check_writable(out: str | Path, flag: str = "--out") -> Path:
    """`out` as a Path, after checking that it can be created or written (nothing is left)."""
    if str(out) == "":
        raise RunDirError(f"{flag} must not be empty")
    out = Path(out)
    existing = next(p for p in (out, *out.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        raise RunDirError(f"{flag} {out}: {existing} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise RunDirError(f"{flag} {out}: cannot write to {existing} ({e.strerror})") from e
    return out


def prepare_run_dir(out: Path, existing: str) -> None:
    """Refuse, clear or keep (`existing`: one of EXISTING) a folder that holds a run."""
    if existing not in EXISTING:
        raise ValueError(f"existing must be one of {EXISTING}, got {existing!r}")
    check_writable(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out} is not a folder")
    if not holds_run(out) or existing == "resume":
        return
    if existing == "refuse":
        raise RunDirError(
            f"{out} already holds a run; continue it with --resume {out}, "
            "or replace it with --overwrite"
        )
    clear_run(out)


def clear_run(out: Path) -> None:
    """Remove a run's files from `out` (other files stay); the folder too if it is then empty."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        out.rmdir()
