"""When a routed model's network stops training all-full: the warm-up of the routing recipe.

A router learns to send a token to full attention only if full attention helps it there, and
full attention learns to help only if tokens are sent to it (MQAR's chicken-and-egg); so the
recipe first trains the network with every token on full attention. `FullWarmup` decides how
long (`TrainConfig.full_until`):

- "steps": the first `full_warmup` steps. A step count is tuned to the task it was found on:
  the MQAR preset's 1,000 end before full attention has learned recall on a harder variant,
  and the router then never sees a gain (issue 19).
- "evidence": until the run sees that full attention has learned what it pays for. Every
  PROBE_EVERY steps the step's batch is scored without gradient under all-full and all-local
  routing of the same weights (`reference_gap`); the gap g = nats(all-local) - nats(all-full),
  smoothed, grows when full attention starts to use what lies beyond the local window (recall,
  copying) and stops growing when it has learned it. The warm-up ends at the first probe where
  g >= MARGIN and g has grown by less than GROWTH over the last PLATEAU of the warm-up so far
  (a scale-free plateau: no step count; at PLATEAU = 0.5 the gain has held for as long as it
  took to appear), or at LIMIT of the run's steps if that never happens (full attention did
  not pay here at this budget; the router gets the rest to learn that).

What the network runs in the warm-up (`TrainConfig.warmup_route`): "full", every token on full
attention at every step; or "full-local", all-full and all-local on alternate steps, so that a
text on which full attention never pays does not spend the warm-up training only the mechanism
the router will drop (issue 19, item 4). Measured, it does meet item 4 on tinyshakespeare, but
on MQAR recall then emerges late or not at all (docs/design-notes.md § The evidence-ended
warm-up): the default stays "full".

The probe costs two forward passes without gradient every PROBE_EVERY steps (~3 % of a step's
time at PROBE_EVERY = 25). The state (`history`, `ended`) goes into the checkpoint, so a resumed
run decides exactly as the uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..mechanisms import MECHANISMS
from ..policies import one_mechanism

FULL = torch.eye(len(MECHANISMS))[MECHANISMS.index("full")]  # the simplex's full corner [M]
LOCAL = torch.eye(len(MECHANISMS))[MECHANISMS.index("local")]  # the local corner [M]
PROBE_EVERY = 25  # steps between reference probes ("evidence")
MARGIN = 0.05  # nats per scored token: full attention must beat local by this much
GROWTH = 1.05  # "still growing": more than 5 % above the gap a PLATEAU of the warm-up ago
PLATEAU = 0.5  # the last half of the warm-up so far (a fifth ended MQAR's too early)
LIMIT = 0.5  # at most this share of the run's steps
SMOOTHING = 0.3  # exponential moving average weight of the newest probe


@dataclass
class FullWarmup:
    """Whether step `s` of a routed model's run trains all-full (`active`), fed the probes'
    gaps (`observe`)."""

    until: str  # "steps" or "evidence"
    steps: int  # "steps": the warm-up's length (TrainConfig.full_warmup)
    total: int  # the run's steps
    routes: str = "full"  # "full" or "full-local" (TrainConfig.warmup_route)
    history: list[list[float]] = field(default_factory=list)  # [step, smoothed gap] per probe
    ended: int | None = None  # "evidence": the first step after the warm-up, once decided

    @classmethod
    def of(cls, tc: TrainConfig, fixed_prior: bool) -> FullWarmup:
        """The warm-up of a run (none for a fixed prior: its network is its reference)."""
        steps = 0 if fixed_prior else tc.full_warmup
        until = "steps" if fixed_prior else tc.full_until
        return cls(until, steps, tc.steps, tc.warmup_route)

    def active(self, step: int) -> bool:
        if self.until == "steps":
            return step < self.steps
        return self.ended is None or step < self.ended

    def route(self, step: int) -> torch.Tensor | None:
        """What the network runs at `step` for every token [M] (a simplex corner), or None
        after the warm-up (the routed mixture)."""
        if not self.active(step):
            return None
        return LOCAL if self.routes == "full-local" and step % 2 else FULL

    def probes(self, step: int) -> bool:
        """Whether `step` (a warm-up step) is scored under both references."""
        return self.until == "evidence" and self.ended is None and step % PROBE_EVERY == 0

    def observe(self, step: int, gap: float) -> None:
        """The gap of the probe at `step`; ends the warm-up after it when the evidence says so."""
        last = self.history[-1][1] if self.history else gap
        smooth = SMOOTHING * gap + (1 - SMOOTHING) * last
        self.history.append([float(step), smooth])
        earlier = [g for s, g in self.history if s <= step * (1 - PLATEAU)]
        grown = bool(earlier) and smooth >= GROWTH * max(earlier[-1], 0.0)
        learned = smooth >= MARGIN and len(self.history) >= 4 and not grown
        if learned or step + 1 >= LIMIT * self.total:
            self.ended = step + 1

    def offset(self) -> int:
        """Where the routing phase starts: hardening schedules count from here ("evidence")."""
        if self.until == "steps":
            return 0
        return self.total if self.ended is None else self.ended

    def gap(self) -> float | None:
        """The latest smoothed gap (None before the first probe)."""
        return self.history[-1][1] if self.history else None

    def state(self) -> dict:
        return {"history": self.history, "ended": self.ended}

    def load(self, state: dict | None) -> None:
        if state is not None:
            self.history, self.ended = [list(h) for h in state["history"]], state["ended"]


@torch.no_grad()
def reference_gap(net, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> float:
    """nats(all-local) - nats(all-full) per scored token of a batch x, y [B, T] (mask: the
    scored positions, None: all), the same weights routed hard one way, then the other."""
    nats = {}
    for name in ("full", "local"):
        alphas, assignments = one_mechanism(x, name, len(net.blocks), net.tok_emb.weight.dtype)
        logits = net(x, alphas, assignments)  # [B, T, V]
        loss = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # [B, T]
        nats[name] = float(loss[mask].mean() if mask is not None else loss.mean())
    return nats["local"] - nats["full"]
