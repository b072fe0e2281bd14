"""Byte-level corpora: a user file, or the built-in standard-library corpus; splits and batches.

The built-in corpus is the running interpreter's own standard library: every `.py` file under
`sysconfig.get_paths()["stdlib"]` (site-packages excluded), sorted by relative path, concatenated
and cut at `max_bytes`. Every Python install has it, so nothing is downloaded; it differs between
Python versions, which is why each run records the corpus sha256.

`synthetic:recall` names the built-in routing-validity task (`recall.py`): generated, seeded,
with a known class per position (`Corpus.val_classes`).

Split: the first (1 - val_fraction) of the bytes train, the last val_fraction validate (one
contiguous cut, no shuffling); `batches.py` cuts windows from the splits.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

from .batches import Batch, sample_batch, val_window_classes, val_windows
from .recall import CLASS_NAMES, RECALL_TASK, recall_corpus

BUILTIN = "builtin:stdlib"


class CorpusError(ValueError):
    """A corpus that cannot be used: missing, unreadable, empty or too short."""


@dataclass(frozen=True)
class Corpus:
    name: str  # file path or BUILTIN
    train: torch.Tensor  # [N_train] uint8
    val: torch.Tensor  # [N_val] uint8
    sha256: str  # of the bytes used (after the cap)
    block_size: int  # T, bytes per window
    val_classes: torch.Tensor | None = None  # [N_val] uint8 token classes (synthetic tasks)

    @property
    def n_bytes(self) -> int:
        return self.train.numel() + self.val.numel()

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return None if self.val_classes is None else CLASS_NAMES

    def record(self) -> dict[str, object]:
        """What a run folder records of its data."""
        return {
            "name": self.name,
            "bytes": self.n_bytes,
            "sha256": self.sha256,
            "train_bytes": self.train.numel(),
            "val_bytes": self.val.numel(),
        }

    def train_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        """Windows at random offsets of the training split (every next byte scored)."""
        return Batch(*sample_batch(self.train, batch_size, self.block_size, generator))

    def val_batches(self, batch_size: int, count: int) -> list[Batch]:
        """Up to `count` batches of consecutive windows from the start of the validation split."""
        pairs = val_windows(self.val, batch_size, self.block_size, count)
        if self.val_classes is None:
            return [Batch(x, y) for x, y in pairs]
        classes = val_window_classes(self.val_classes, batch_size, self.block_size, count)
        return [Batch(x, y, None, c) for (x, y), c in zip(pairs, classes, strict=True)]


def builtin_bytes(max_bytes: int) -> bytes:
    """The stdlib `.py` sources, sorted by relative path, concatenated, cut at `max_bytes`."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p
        for p in root.rglob("*.py")
        if not {"site-packages", "dist-packages"} & set(p.relative_to(root).parts)
    )
    out, size = [], 0
    for p in files:
        try:
            chunk = p.read_bytes()
        except OSError:
            continue
        out.append(chunk)
        size += len(chunk)
        if size >= max_bytes:
            break
    return b"".join(out)[:max_bytes]


def read_bytes(path: str | os.PathLike, max_bytes: int) -> bytes:
    p = Path(path)
    if not p.exists():
        raise CorpusError(f"corpus file not found: {p}")
    if not p.is_file():
        raise CorpusError(f"corpus path is not a file: {p}")
    try:
        with p.open("rb") as f:
            return f.read(max_bytes)
    except OSError as e:
        raise CorpusError(f"cannot read corpus {p}: {e.strerror}") from e


def load_corpus(
    path: str | None, block_size: int, max_bytes: int, val_fraction: float = 0.1
) -> Corpus:
    """Load `path` (None: the built-in corpus) and split it; raise CorpusError when unusable.

    Both splits must hold at least one window of block_size + 1 bytes.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    classes = None
    if path == RECALL_TASK:
        data, classes = recall_corpus(max_bytes)
    else:
        data = builtin_bytes(max_bytes) if path is None else read_bytes(path, max_bytes)
    name = BUILTIN if path is None else str(path)
    if not data:
        raise CorpusError(f"corpus is empty: {name}")
    n_val = int(len(data) * val_fraction)
    need = block_size + 1
    if n_val < need or len(data) - n_val < need:
        minimum = int(need / min(val_fraction, 1 - val_fraction)) + 1
        raise CorpusError(
            f"corpus too short: {name} has {len(data)} bytes; block_size={block_size} needs at "
            f"least {minimum} bytes for a train and a validation window"
        )
    tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return Corpus(
        name=name,
        train=tensor[: len(data) - n_val],
        val=tensor[len(data) - n_val :],
        sha256=hashlib.sha256(data).hexdigest(),
        block_size=block_size,
        val_classes=None if classes is None else classes[len(data) - n_val :],
    )
