"""Windows cut from a split: random training batches and consecutive held-out batches.

Training windows start at uniformly random offsets drawn from a seeded generator; validation
windows are the consecutive non-overlapping windows from the start of the validation split.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Batch(NamedTuple):
    """One batch of a data source; positions are [B, T]."""

    x: torch.Tensor  # int64 input bytes
    y: torch.Tensor  # int64 targets: the next byte, or a task's answer
    mask: torch.Tensor | None = None  # bool: the positions whose target is scored (None: all)
    classes: torch.Tensor | None = None  # uint8 token class of each position, if known

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(None if t is None else t.to(device) for t in self))


def sample_batch(
    split: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: x [B, T] int64 input bytes, y [B, T] int64 next bytes."""
    starts = torch.randint(0, split.numel() - block_size, (batch_size,), generator=generator)
    idx = starts[:, None] + torch.arange(block_size + 1)  # [B, T+1]
    windows = split[idx].long()
    return windows[:, :-1], windows[:, 1:]


def _val_index(n: int, batch_size: int, block_size: int, max_batches: int) -> torch.Tensor:
    """[N, T+1] positions of consecutive non-overlapping windows from the start of a split."""
    count = min((n - 1) // block_size, batch_size * max_batches)
    return torch.arange(count)[:, None] * block_size + torch.arange(block_size + 1)


def val_windows(
    split: torch.Tensor, batch_size: int, block_size: int, max_batches: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive non-overlapping windows from the start of `split`, as (x, y) batches [B, T]."""
    windows = split[_val_index(split.numel(), batch_size, block_size, max_batches)].long()
    return [
        (windows[i : i + batch_size, :-1], windows[i : i + batch_size, 1:])
        for i in range(0, windows.shape[0], batch_size)
    ]


def val_window_classes(
    classes: torch.Tensor, batch_size: int, block_size: int, max_batches: int
) -> list[torch.Tensor]:
    """The class [B, T] of every input position of the `val_windows` batches."""
    windows = classes[_val_index(classes.numel(), batch_size, block_size, max_batches)][:, :-1]
    return [windows[i : i + batch_size] for i in range(0, windows.shape[0], batch_size)]
