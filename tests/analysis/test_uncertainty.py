"""Posterior samples via Predictive, the entropy decomposition and the uncertainty report."""

import json
import math
from pathlib import Path

import pyro
import pytest
import torch

from pyro_meta_attention.analysis.uncertainty import (
    posterior_samples,
    routing_uncertainty,
    uncertainty_report,
)
from pyro_meta_attention.bayes.sites import OBS_SITE
from pyro_meta_attention.config import smoke_config
from pyro_meta_attention.training.build import build
from pyro_meta_attention.training.checkpoint import load_checkpoint
from pyro_meta_attention.training.run_dir import CHECKPOINT_FILE
from pyro_meta_attention.training.svi import fit

SMALL_DATA = {"max_bytes": 20_000}  # enough for smoke windows, quick to load


def text_batch(B: int = 2, T: int = 32) -> torch.Tensor:
    """x [B, T] bytes of text with a newline every third byte."""
    data = (b"ab\n" * (B * T))[: B * T]
    return torch.tensor(list(data), dtype=torch.long).view(B, T)


def corners(*indices: int, M: int = 3) -> torch.Tensor:
    """Samples [S, 1, 1, M]: one-hot rows at the given corners (float32, exact zeros)."""
    return torch.eye(M)[list(indices)].view(len(indices), 1, 1, M)


@pytest.fixture(scope="module")
def none_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("none")
    fit(smoke_config(prior={"name": "none"}, data=SMALL_DATA), out=out, progress=False)
    return out / CHECKPOINT_FILE


def test_posterior_samples_are_predictive_dicts_on_the_simplex():
    pyro.set_rng_seed(1)
    model, guide = build(smoke_config())
    samples = posterior_samples(model, guide, text_batch(), num_samples=4)
    assert set(samples) == {"alpha_0", "alpha_1"} and OBS_SITE not in samples
    for alpha in samples.values():
        assert alpha.shape == (4, 2, 32, 3)
        assert (alpha >= 0).all()
        torch.testing.assert_close(alpha.sum(-1), torch.ones(4, 2, 32))
        assert not torch.equal(alpha[0], alpha[1])  # Dirichlet draws differ


@pytest.mark.parametrize(
    "samples, total, aleatoric, epistemic",
    [
        (corners(0, 0, 0, 0), 0.0, 0.0, 0.0),  # certain hard routing
        (corners(0, 1, 0, 1), math.log(2), 0.0, math.log(2)),  # disagreeing hard routes
        (corners(0, 1, 2), math.log(3), 0.0, math.log(3)),
        (torch.full((4, 1, 1, 3), 1 / 3), math.log(3), math.log(3), 0.0),  # agreed soft mix
    ],
)
def test_decomposition_on_hand_made_samples(samples, total, aleatoric, epistemic):
    u = routing_uncertainty({"alpha_0": samples})["alpha_0"]
    assert u["mean"].shape == (1, 1, 3) and u["total"].shape == (1, 1)
    for key, expected in (("total", total), ("aleatoric", aleatoric), ("epistemic", epistemic)):
        assert u[key].item() == pytest.approx(expected, abs=1e-6), key


def test_epistemic_is_never_negative():
    gen = torch.Generator().manual_seed(2)
    a = torch.exp(torch.empty(3, 5, 2, 3).uniform_(-3, 3, generator=gen))  # 0.05 .. 20
    pyro.set_rng_seed(2)
    draws = torch.distributions.Dirichlet(a.float()).sample((16,))  # float32: exact zeros occur
    u = routing_uncertainty({f"alpha_{l}": draws[..., l, :] for l in range(2)}, a)
    for stats in u.values():
        assert all(torch.isfinite(v).all() for v in stats.values())
        assert stats["epistemic"].min() >= -1e-12


def test_closed_form_aleatoric_matches_monte_carlo():
    """E[H(alpha)] closed form vs Monte Carlo in float64, per token.

    The MC estimate is a mean of S i.i.d. entropies, so its standard error is std(H) / sqrt(S)
    (at most log(3) / sqrt(S) ~ 0.008 at S = 20000). Each of the 8 (token, layer) pairs must
    agree within 5 standard errors: a false failure has probability ~ 8 · 6e-7.
    """
    S = 20_000
    rows = torch.tensor([[0.05, 0.05, 0.05], [0.3, 1.0, 3.0], [1.0, 1.0, 1.0], [20.0, 0.5, 2.0]])
    a = torch.cat([rows, 1.5 * rows.flip(-1)]).double().view(2, 2, 2, 3)  # [B, T, L, M]
    pyro.set_rng_seed(3)
    draws = torch.distributions.Dirichlet(a).sample((S,))  # [S, B, T, L, M] float64
    samples = {f"alpha_{l}": draws[..., l, :] for l in range(2)}
    u = routing_uncertainty(samples, a)
    for l in range(2):
        stats = u[f"alpha_{l}"]
        h = -(draws[..., l, :] * draws[..., l, :].clamp_min(1e-300).log()).sum(-1)  # [S, B, T]
        standard_error = h.std(0) / math.sqrt(S)
        gap = (stats["aleatoric_exact"] - stats["aleatoric"]).abs()
        assert (gap <= 5 * standard_error + 1e-9).all(), (gap / standard_error).max()
        torch.testing.assert_close(stats["concentration_total"], a[:, :, l].sum(-1))


def test_uniform_dirichlet_closed_form_value():
    # Dirichlet(1, 1, 1): E[H] = psi(4) - psi(2) = 1/2 + 1/3 exactly
    u = routing_uncertainty({"alpha_0": torch.full((1, 1, 1, 3), 1 / 3)}, torch.ones(1, 1, 1, 3))
    assert u["alpha_0"]["aleatoric_exact"].item() == pytest.approx(5 / 6, abs=1e-12)


def test_none_checkpoint_has_zero_epistemic_and_the_deterministic_flag(none_checkpoint):
    pyro.set_rng_seed(4)
    _, model, guide = load_checkpoint(none_checkpoint)
    report = uncertainty_report(model, guide, text_batch(), num_samples=3)
    assert report["deterministic"] is True
    assert report["max_epistemic"] <= 1e-12
    assert report["most_epistemic"] == [] and report["least_epistemic"] == []
    for row in report["layers"]:
        assert row["concentration_total"] is None and row["aleatoric_gap"] is None
        assert row["total"] == pytest.approx(row["aleatoric"], abs=1e-12)


def test_report_is_json_and_lists_tokens_by_epistemic_uncertainty():
    pyro.set_rng_seed(5)
    model, guide = build(smoke_config(guide={"init": "random"}))
    report = uncertainty_report(model, guide, text_batch(), num_samples=4, top_k=3)
    assert json.loads(json.dumps(report)) == report
    assert report["deterministic"] is False
    most, least = report["most_epistemic"], report["least_epistemic"]
    assert len(most) == len(least) == 3
    assert most[0]["epistemic"] >= most[-1]["epistemic"] >= least[-1]["epistemic"]
    assert least[0]["epistemic"] <= least[-1]["epistemic"]
    for row in report["layers"]:
        assert sum(row["argmax_share"].values()) == pytest.approx(1.0)
        assert sum(row["alpha_mean"].values()) == pytest.approx(1.0)
        assert row["total"] >= row["aleatoric"] and row["concentration_total"] > 0
