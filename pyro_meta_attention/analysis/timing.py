"""Wall-clock timing of callables side by side: the one timer of the package.

Variants are called round-robin in one loop, so machine noise hits them alike, and on CUDA the
device is synchronised around every call (kernels are asynchronous).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronizer(device: torch.device | str) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op off CUDA)."""
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else lambda: None


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Median seconds per call of each fn, all timed round-robin in one loop after `warmup`
    untimed rounds."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    sync = synchronizer(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}
