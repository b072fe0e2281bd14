"""What every experiments/ script shares: its parser, the one-line error exit, loading a run.

    from common import ArgumentParser, main_guard, load_run

    def main(argv=None) -> int:
        p = ArgumentParser(__doc__)
        p.add_argument("--checkpoint")
        p.add_flags("smoke", "device")
        a = p.parse_args(argv)
        ...

    if __name__ == "__main__":
        sys.exit(main_guard(main))

A bad input never shows a traceback: argparse errors and the errors the library raises for
bad input (ValueError and its kin: CorpusError, CheckpointError, RunDirError, DataMismatch;
FileNotFoundError, UsageError) and a diverged run become one `error: ...` line on stderr and
exit code 2; a run stopped by SIGINT or SIGTERM, one line and exit code 128 + the signal.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import pyro
import torch
from runner import BACKENDS

from pyro_meta_attention.config import RunConfig, smoke_config
from pyro_meta_attention.data.corpus import Corpus, CorpusError
from pyro_meta_attention.data.sources import DataSource
from pyro_meta_attention.training.checkpoint import read_checkpoint, restore
from pyro_meta_attention.training.data_identity import data_of
from pyro_meta_attention.training.divergence import TrainingDiverged
from pyro_meta_attention.training.run_dir import CHECKPOINT_FILE, check_writable
from pyro_meta_attention.training.signals import TrainingInterrupted
from pyro_meta_attention.training.svi import fit
from pyro_meta_attention.training.tensorboard import check_installed

VISIBLE = {"\n": "⏎", "\t": "⇥", "\r": "␍", "\x7f": "␡"}
MAX_SEED = 2**63 - 1  # torch.manual_seed takes a signed 64-bit integer


class UsageError(ValueError):
    """A bad command line or input found by a script itself."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the module docstring as help, one-line errors and the shared flags."""

    def __init__(self, doc: str | None) -> None:
        super().__init__(description=doc, formatter_class=argparse.RawTextHelpFormatter)

    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)

    def add_flags(self, *names: str) -> None:
        """The flags several scripts share, by name: smoke, progress, device, seed, tensorboard
        (--tensorboard DIR), runner (--backend, --address: the studies' `runner.py`)."""
        for name in names:
            if name == "smoke":
                self.add_argument("--smoke", action="store_true", help="tiny and fast (for tests)")
            elif name == "progress":
                self.add_argument("--no-progress", action="store_true", help="no progress bar")
            elif name == "device":
                self.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
            elif name == "seed":
                self.add_argument("--seed", type=seed_value, default=0, help="random seed")
            elif name == "tensorboard":
                self.add_argument(
                    "--tensorboard", default=None, metavar="DIR", help="TensorBoard event files"
                )
            elif name == "runner":
                self.add_argument("--backend", default="local", choices=BACKENDS, help="run pool")
                self.add_argument("--address", default=None, help="a Ray cluster (--backend ray)")
            else:
                raise KeyError(f"no shared flag {name!r}")


def seed_value(text: str) -> int:
    """--seed: an integer in 0 .. 2**63 - 1."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in 0 .. 2**63 - 1, got {text}")
    return seed


def add_set_flag(p: argparse.ArgumentParser, help: str) -> None:
    """--set SECTION.FIELD=VALUE ...: may be given several times; the items accumulate."""
    p.add_argument("--set", nargs="*", action="extend", default=[], metavar="S.F=V", help=help)


def main_guard(main: Callable[[], int]) -> int:
    """Run a script's main; bad input becomes one `error: ...` line and exit code 2."""
    try:
        return main()
    except (UsageError, CorpusError, ValueError, FileNotFoundError, TrainingDiverged) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(f"error: interrupted by {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def check_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but no CUDA device is available")


def out_folder(out: str | None) -> Path | None:
    """--out as a Path, checked to be writable before any work (None: no --out)."""
    if out is None:
        return None
    try:
        return check_writable(out)
    except ValueError as e:
        raise UsageError(str(e)) from None


def tensorboard_folder(path: str | None) -> Path | None:
    """--tensorboard DIR, checked before any work: writable, and the package installed."""
    if path is None:
        return None
    check_installed()  # a ValueError: one line, exit 2
    return out_folder(path)


def at_least(value: int | None, minimum: int, flag: str) -> None:
    """UsageError unless an optional integer flag is >= minimum."""
    if value is not None and value < minimum:
        raise UsageError(f"{flag} must be >= {minimum}, got {value}")


def load_run(
    checkpoint: str | Path, data: str | None = None, device: str = "cpu", need_data: bool = True
) -> tuple[RunConfig, torch.nn.Module, torch.nn.Module, DataSource | None]:
    """(config, model, guide, data) of a checkpoint, in eval mode; the data is what the run
    trained on (an error if it changed since), or the corpus or task `data` names instead (a
    warning if it is not the training data); None with need_data=False (generation needs only
    the checkpoint). A checkpoint of an unfinished run is said so."""
    check_device(device)
    ck = read_checkpoint(checkpoint, map_location=device)
    model, guide = restore(ck, device)
    pyro.clear_param_store()  # only now that the file is checked; the modules hold the weights
    source, warning = data_of(ck.config, ck.corpus, data) if need_data else (None, None)
    if warning is not None:
        print(warning, file=sys.stderr)
    if not ck.finished:
        steps = ck.config.train.steps
        print(f"note: {checkpoint} is from an interrupted run (step {ck.step} of {steps})")
    return ck.config, model.eval(), guide.eval(), source


def load_text_run(
    checkpoint: str | Path, positions: int
) -> tuple[RunConfig, torch.nn.Module, torch.nn.Module, Corpus]:
    """`load_run` for scripts that run a model on `positions` held-out bytes of its training
    text: a learned-position model that cannot reach that far, or a model trained on a task,
    is a UsageError (the positions are checked before the data is read)."""
    m = read_checkpoint(checkpoint).config.model
    if not m.rotary and positions > m.block_size:
        raise UsageError(
            f"{checkpoint} has learned positions (a run before rotary positions): it cannot "
            f"run past block_size {m.block_size}"
        )
    config, model, guide, source = load_run(checkpoint)
    if not isinstance(source, Corpus):
        raise UsageError(f"{checkpoint} trained on {config.data.path}, not on text")
    return config, model, guide, source


def smoke_checkpoint(seed: int = 0) -> Path:
    """Train the smoke config into a new temporary folder, removed when the process exits;
    return its checkpoint path."""
    out = Path(tempfile.mkdtemp(prefix="smoke-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    fit(smoke_config(train={"seed": seed}), out=out, progress=False)
    return out / CHECKPOINT_FILE


def visible(data: bytes) -> str:
    """Decode bytes (errors="replace") with newlines, tabs and control bytes made visible."""
    text = data.decode("utf-8", errors="replace")
    return "".join(VISIBLE.get(c, chr(0x2400 + ord(c)) if ord(c) < 32 else c) for c in text)


def parse_set(items: list[str], config: RunConfig) -> dict[str, dict[str, Any]]:
    """['train.full_warmup=1000'] -> {'train': {'full_warmup': 1000}} for `config.override`;
    a value is read as JSON when it parses (numbers, true/false), else kept as text."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, eq, text = item.partition("=")
        section, _, name = key.partition(".")
        part = getattr(config, section, None)
        known = {f.name for f in fields(part)} if is_dataclass(part) else ()
        if not eq or name not in known:
            raise UsageError(f"--set {item}: use SECTION.FIELD=VALUE with a RunConfig field")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        current = getattr(part, name)
        want = type(current)
        fits = isinstance(value, want) and (want is bool or not isinstance(value, bool))
        if current is not None and not (fits or (want is float and type(value) is int)):
            raise UsageError(f"--set {item}: {section}.{name} expects type {want.__name__}")
        if name in out.get(section, {}):
            raise UsageError(f"--set {item}: {section}.{name} is set twice")
        out.setdefault(section, {})[name] = value
    return out


def read_input_file(path: str, flag: str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most max_bytes (a FIFO or a device could block or
    never end; a folder is not a file)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"{flag}: no such file: {path}") from None
    except OSError as e:
        raise UsageError(f"{flag}: cannot read {path}: {e.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{flag}: {path} is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{flag}: {path} is not a regular file (a pipe or a device)")
    if info.st_size > max_bytes:
        raise UsageError(f"{flag}: {path} has {info.st_size} bytes, more than {max_bytes}")
    try:
        with open(path, "rb") as f:
            return f.read(max_bytes + 1)[:max_bytes]
    except OSError as e:
        raise UsageError(f"{flag}: cannot read {path}: {e.strerror}") from None


def output_file(path: str, flag: str, suffix: str) -> Path:
    """An output file path checked before any work: ends in `suffix`, is not a folder, and its
    folder exists and is writable. The path returned is the path that is written."""
    out = Path(path)
    if out.suffix.lower() != suffix:
        raise UsageError(f"{flag}: give a {suffix} file, got {path!r}")
    if out.is_dir():
        raise UsageError(f"{flag}: {path} is a folder")
    parent = out.parent
    if not parent.is_dir():
        raise UsageError(f"{flag}: {parent} is not a folder")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UsageError(f"{flag}: cannot write {path}")
    return out
