"""Stopping a run cleanly on SIGINT or SIGTERM.

Inside `stop_on_signals()` the first SIGINT or SIGTERM only sets `Stop.signum`; the training
loop looks at it after every step, saves its checkpoint and raises `TrainingInterrupted`. A
second SIGINT interrupts at once (KeyboardInterrupt). Handlers can only be installed in the
main thread; elsewhere the signals keep their usual effect.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(RuntimeError):
    """A run stopped by a signal after saving its checkpoint; `signum` is the signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


@dataclass
class Stop:
    signum: int | None = None  # the first signal received, if any

    @property
    def name(self) -> str:
        return "" if self.signum is None else signal.Signals(self.signum).name


@contextmanager
def stop_on_signals() -> Iterator[Stop]:
    """A `Stop` whose `signum` is set by the first SIGINT or SIGTERM while inside."""
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum: int, frame) -> None:
        if stop.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.signum = signum

    old = {s: signal.signal(s, handle) for s in SIGNALS}
    try:
        yield stop
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
