"""Divergence: a loss that is not finite, or stays far above uniform prediction.

Uniform prediction over V tokens costs log V nats/token (log 256 = 5.55 for bytes); a run whose
nats/token stay above `FACTOR` x log V for `PATIENCE` logged rows (or at its last row) has
diverged, and so has any step whose loss is not finite. `Watchdog.check` raises
`TrainingDiverged` naming the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

FACTOR = 2.0  # nats/token above FACTOR x log V count as diverged
PATIENCE = 3  # consecutive logged rows above it before the run is stopped


class TrainingDiverged(RuntimeError):
    """The loss became non-finite or stayed far above uniform prediction."""


def limit(vocab_size: int) -> float:
    """The nats/token above which a run counts as diverged."""
    return FACTOR * math.log(vocab_size)


def diverged(nats: float, vocab_size: int) -> bool:
    return not math.isfinite(nats) or nats > limit(vocab_size)


@dataclass
class Watchdog:
    vocab_size: int  # V: the uniform prediction costs log V nats/token
    high: list[int] = field(default_factory=list)  # consecutive logged steps above the limit

    def check_loss(self, loss: float, step: int) -> None:
        if not math.isfinite(loss):
            raise TrainingDiverged(f"training diverged at step {step}: loss is {loss}")

    def check_row(self, nats: float, step: int, last: bool) -> None:
        """After a logged row; `last`: the final row of the run."""
        self.high = self.high + [step] if diverged(nats, self.vocab_size) else []
        if len(self.high) >= PATIENCE or (self.high and last):
            raise TrainingDiverged(
                f"training diverged at step {step}: {nats:.4g} nats/token at "
                f"{len(self.high)} logged step(s) from step {self.high[0]} (uniform prediction: "
                f"{math.log(self.vocab_size):.2f}; limit {limit(self.vocab_size):.2f})"
            )
