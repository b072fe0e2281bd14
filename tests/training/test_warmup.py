"""training/warmup.py: the all-full warm-up ends after a step count, or on evidence — the gap
between the all-local and all-full loss has passed its margin and stopped growing — and a
resumed run decides as the uninterrupted one."""

import pytest
import torch

import pyro_meta_attention.training.svi as svi
from pyro_meta_attention.analysis.length_curve import position_nats
from pyro_meta_attention.bayes.model import RoutingModel
from pyro_meta_attention.config import TrainConfig, smoke_config
from pyro_meta_attention.mechanisms import MECHANISMS
from pyro_meta_attention.mechanisms.cost import cost_model_for
from pyro_meta_attention.training.build import build
from pyro_meta_attention.training.warmup import (
    FULL,
    LIMIT,
    LOCAL,
    MARGIN,
    PROBE_EVERY,
    FullWarmup,
    reference_gap,
)


def feed(warmup: FullWarmup, gaps: list[float]) -> int | None:
    """Probe every PROBE_EVERY steps with these raw gaps until the warm-up ends."""
    for i, gap in enumerate(gaps):
        step = i * PROBE_EVERY
        assert warmup.active(step) and warmup.probes(step)
        warmup.observe(step, gap)
        if warmup.ended is not None:
            return warmup.ended
    return None


def test_a_step_count_and_a_fixed_prior():
    w = FullWarmup.of(TrainConfig(steps=100, full_warmup=10), fixed_prior=False)
    assert w.active(9) and not w.active(10) and not w.probes(0) and w.offset() == 0
    assert not FullWarmup.of(TrainConfig(full_warmup=10), fixed_prior=True).active(0)


def test_the_warm_up_routes_all_full_or_alternates_the_references():
    tc = TrainConfig(steps=100, full_warmup=10)
    full = FullWarmup.of(tc, fixed_prior=False)
    both = FullWarmup.of(TrainConfig(steps=100, full_warmup=10, warmup_route="full-local"), False)
    assert all(torch.equal(full.route(s), FULL) for s in range(10)) and full.route(10) is None
    assert [both.route(s).argmax().item() for s in range(4)] == [FULL.argmax(), LOCAL.argmax()] * 2
    assert both.route(10) is None
    with pytest.raises(ValueError, match="warmup_route"):
        TrainConfig(warmup_route="local")


def test_a_full_local_run_trains_each_reference_on_alternate_warm_up_steps(monkeypatch):
    """What the network runs at each step of `fit` (the model's `route`): full, local, ... in
    the warm-up, the sampled routing (None) after it."""
    routes, forward = [], RoutingModel.forward

    def spy(self, *args, route=None, **kwargs):
        routes.append(None if route is None else MECHANISMS[int(route.argmax())])
        return forward(self, *args, route=route, **kwargs)

    monkeypatch.setattr(RoutingModel, "forward", spy)
    config = smoke_config(train={"steps": 6, "full_warmup": 4, "warmup_route": "full-local"})
    svi.fit(config, progress=False)
    setup = routes.pop(0)  # the call that lets Pyro set up its parameters, before step 0
    assert setup is None and routes == ["full", "local", "full", "local", None, None]


def test_the_evidence_waits_for_emergence_then_a_plateau():
    """A gap flat at 0 for 30 probes (recall not yet learned: no plateau may end it there), then
    rising to 0.4 by probe 50, then flat: it ends once the gain has held for as long as the
    warm-up had lasted when it stopped rising (PLATEAU = 0.5), not before."""
    w = FullWarmup.of(TrainConfig(steps=10_000, full_until="evidence"), fixed_prior=False)
    rise = [0.0] * 30 + [0.02 * k for k in range(1, 21)] + [0.4] * 90
    ended = feed(w, rise)
    assert ended is not None and 2 * 50 * PROBE_EVERY < ended < 140 * PROBE_EVERY
    assert w.gap() >= MARGIN and not w.active(ended) and w.offset() == ended


def test_a_gap_that_never_pays_ends_at_the_limit():
    w = FullWarmup.of(TrainConfig(steps=2000, full_until="evidence"), fixed_prior=False)
    assert feed(w, [0.01] * 100) == (LIMIT * 2000 // PROBE_EVERY) * PROBE_EVERY + 1


def test_the_reference_gap_is_the_all_local_minus_all_full_loss():
    """Against length_curve.position_nats, an independent forced-routing evaluation."""
    config = smoke_config()
    torch.manual_seed(0)
    model, guide = build(config)
    model, guide = model.double().eval(), guide.double().eval()
    data = torch.randint(0, 256, (3, 33), generator=torch.Generator().manual_seed(1))
    x, y = data[:, :-1], data[:, 1:]
    nats = position_nats(model, guide, data, cost_model_for(config.model).normalised())
    want = float(nats["all-local"].mean() - nats["all-full"].mean())
    assert reference_gap(model.net, x, y, None) == pytest.approx(want, rel=1e-9, abs=1e-12)
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[:, -5:] = True
    want = float(nats["all-local"][:, -5:].mean() - nats["all-full"][:, -5:].mean())
    assert reference_gap(model.net, x, y, mask) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_an_evidence_run_logs_its_warm_up_and_resumes_bitwise(tmp_path, monkeypatch):
    config = smoke_config(
        train={"steps": 80, "log_every": 5, "full_until": "evidence", "harden_final": 1.0}
    )
    whole = svi.fit(config, out=tmp_path / "whole", progress=False)
    warm = [r["full_warmup"] for r in whole.history]
    assert warm[0] and any(not w for w in warm)  # it ended within the run (at LIMIT at most)
    assert whole.history[0]["reference_gap"] is not None
    real = svi._svi_step

    def ctrl_c_at_30(
        s, optimizer, step, *args
    ):  # inside the warm-up: it ends at 26 at the earliest
        if step == 30:
            raise KeyboardInterrupt
        return real(s, optimizer, step, *args)

    monkeypatch.setattr(svi, "_svi_step", ctrl_c_at_30)
    with pytest.raises(KeyboardInterrupt):
        svi.fit(config, out=tmp_path / "cut", progress=False)
    monkeypatch.undo()
    resumed = svi.resume(tmp_path / "cut", progress=False)
    strip = lambda h: [{k: v for k, v in r.items() if k != "run_id"} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(whole.history)
