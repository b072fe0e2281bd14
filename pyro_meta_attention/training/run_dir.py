"""The run folder: config.json, metrics.jsonl, summary.json beside checkpoint.pt.

Every run writes its config, seed, package versions and corpus hash (`write_config`) next to
its metrics, so that a result can be traced to what produced it. Files are replaced atomically
(`write_atomic`: a temporary file in the same folder, then `os.replace`), so a kill mid-write
leaves the old file or the new one, never half of one.

`prepare_run_dir` decides what happens to a folder that already holds a run (`EXISTING`):
"refuse" it, "overwrite" it, or "resume" it; `check_writable` finds an unusable output folder
before any work is done.

A run folder has an owner: a run id written at creation into config.json, the checkpoint and
every metrics row (`check_owner` refuses, on resume, files of another run), and a lock held for
the life of a run (`lock_run_dir`: an exclusive `flock` on `.lock`, released by the kernel when
the process dies), so that a second writer is refused before it touches anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
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
LOCK_FILE = ".lock"  # the run folder's lock; holds the pid of the process writing it
RUN_FILES = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, CHECKPOINT_FILE)
EXISTING = ("refuse", "overwrite", "resume")  # what fit does with a folder holding a run


logger = logging.getLogger(__name__)


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


def load_history(run_dir: str | Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """The run's metrics.jsonl rows (step, loss, kl, routing_entropy, routing_share, ...).

    A torn last line (a kill mid-write) is left out with a warning naming the file and line; a
    bad line elsewhere, or (given `run_id`) a row of another run, is a RunDirError.
    """
    path = Path(run_dir) / METRICS_FILE
    lines = path.read_text().splitlines()
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n < len(lines):
                raise RunDirError(f"{path} line {n} is not a metrics row") from None
            logger.warning("%s line %d is torn (cut mid-write): left out", path, n)
            break
        if run_id is not None and row.get("run_id", run_id) != run_id:
            raise RunDirError(
                f"{path} line {n} is a row of run {row['run_id']}, not of this folder's run "
                f"{run_id}: the folder mixes two runs"
            )
        rows.append(row)
    return rows


def keep_history(run_dir: Path, before: int, run_id: str | None = None) -> list[dict[str, Any]]:
    """Cut metrics.jsonl to the rows of steps < `before` (a resumed run logs the rest again)."""
    path = run_dir / METRICS_FILE
    if not path.is_file() and before > 0:
        logger.warning("%s is missing: the rows of steps before %d are lost", path, before)
    rows = (
        [r for r in load_history(run_dir, run_id) if r["step"] < before] if path.is_file() else []
    )
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def check_owner(run_dir: Path, config: RunConfig, run_id: str | None) -> bool:
    """Whether config.json is there; RunDirError if it is unreadable or names another run or
    another configuration than the checkpoint's (`config`, `run_id`; None: an older run)."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return False
    try:
        recorded = json.loads(path.read_text())
        recorded_config = RunConfig.from_dict(recorded["config"])
    except (ValueError, KeyError, TypeError) as e:
        raise RunDirError(f"{path} is not a run's config.json ({e})") from None
    other = recorded.get("run_id")
    checkpoint = run_dir / CHECKPOINT_FILE
    if other is not None and run_id is not None and other != run_id:
        raise RunDirError(
            f"{checkpoint} is from run {run_id}, but {path} from run {other}: the checkpoint "
            "was copied from another run"
        )
    if recorded_config != config:
        raise RunDirError(f"{checkpoint} was trained with another configuration than {path}")
    return True


@contextlib.contextmanager
def lock_run_dir(out: Path):
    """Hold the run folder `out` (created if needed) for the life of the block; RunDirError,
    naming the holder's pid, if another process holds it."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunDirError(f"{out} is in use by another run (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


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
    clear_run(out, remove_folder=False)  # the caller holds its lock


def clear_run(out: Path, remove_folder: bool = True) -> None:
    """Remove a run's files from `out` (other files stay); with remove_folder, its lock and the
    folder too if nothing else is left (a run that failed before its first step)."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    if not remove_folder:
        return
    with contextlib.suppress(OSError):
        if not any(p.name != LOCK_FILE for p in out.iterdir()):
            (out / LOCK_FILE).unlink(missing_ok=True)
        out.rmdir()
