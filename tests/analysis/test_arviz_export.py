"""ArviZ export of routing samples: dimensions, coordinates, values, chains, and ArviZ's own
summaries and plots on the result."""

import sys

import matplotlib
import matplotlib.pyplot
import pyro
import pytest
import torch

from pyro_meta_attention.analysis.arviz_export import routing_array, to_inference_data
from pyro_meta_attention.analysis.uncertainty import posterior_samples, prior_samples
from pyro_meta_attention.config import smoke_config
from pyro_meta_attention.mechanisms import MECHANISMS
from pyro_meta_attention.training.build import build

az = pytest.importorskip("arviz")  # an optional dependency; `make install` installs it
matplotlib.use("Agg")

S, B, T, L = 8, 2, 5, 2


def fake_samples(S: int = S) -> dict[str, torch.Tensor]:
    """alpha_l [S, B, T, M] on the simplex, distinct in every entry, plus an observed site."""
    g = torch.Generator().manual_seed(0)
    draws = {f"alpha_{l}": torch.rand(S, B, T, 3, generator=g) for l in range(L)}
    draws = {k: v / v.sum(-1, keepdim=True) for k, v in draws.items()}
    return draws | {"next_byte": torch.zeros(S, B, T, dtype=torch.long)}


@pytest.mark.parametrize("chains", [1, 2])
def test_draws_land_at_their_chain_draw_layer_and_token(chains):
    samples = fake_samples()
    idata = to_inference_data(samples, chains=chains)
    alpha = idata.posterior["alpha"]
    assert alpha.dims == ("chain", "draw", "layer", "sequence", "position", "mechanism")
    assert alpha.shape == (chains, S // chains, L, B, T, 3)
    assert list(alpha.coords["mechanism"].values) == list(MECHANISMS)
    assert "next_byte" not in idata.posterior  # only routing sites
    for s in (0, S - 1):
        c, d = divmod(s, S // chains)
        for layer in range(L):
            got = torch.from_numpy(alpha.values[c, d, layer])
            assert torch.equal(got, samples[f"alpha_{layer}"][s].double())


def test_summary_mean_is_the_sample_mean_and_plots_draw():
    samples = fake_samples()
    idata = to_inference_data(samples, chains=2)
    coords = {"layer": 1, "sequence": 0, "position": [2, 4]}
    summary = az.summary(idata, coords=coords, kind="stats", round_to="none")
    assert len(summary) == 2 * 3  # two tokens x three mechanisms
    want = samples["alpha_1"][:, 0, 4, MECHANISMS.index("local")].double().mean()
    assert summary.loc["alpha[4, local]", "mean"] == pytest.approx(float(want), rel=1e-12)
    assert az.plot_forest(idata, coords=coords) is not None
    assert az.plot_posterior(idata, coords={**coords, "mechanism": "full"}) is not None
    matplotlib.pyplot.close("all")


@pytest.mark.parametrize("name", ["compute-dirichlet", "hierarchical-dirichlet"])
def test_prior_group_and_input_bytes_from_a_model(name):
    # a hierarchical prior's draws of alpha go through a draw of each layer's routing mean
    pyro.set_rng_seed(0)
    model, guide = build(smoke_config(prior={"name": name}))
    x = torch.randint(0, 256, (B, T))
    post = posterior_samples(model, guide, x, num_samples=4)
    prior = prior_samples(model, x, num_samples=6)
    idata = to_inference_data(post, chains=2, prior=prior, x=x)
    assert idata.prior["alpha"].shape == (1, 6, L, B, T, 3)
    assert set(prior) == set(post) == {f"alpha_{layer}" for layer in range(L)}
    assert idata.constant_data["x"].dims == ("sequence", "position")
    assert torch.equal(torch.from_numpy(idata.constant_data["x"].values), x)


@pytest.mark.parametrize(
    "samples, chains, message",
    [
        (fake_samples(), 3, "divide the 8 draws"),
        ({"next_byte": torch.zeros(2, 1, 1)}, 1, "no routing site"),
        ({"alpha_1": torch.ones(2, 1, 1, 3)}, 1, "layers 0..L-1"),
        ({"alpha_0": torch.ones(2, 1, 1, 3), "alpha_1": torch.ones(2, 1, 2, 3)}, 1, "alike"),
        ({"alpha_0": torch.ones(2, 1, 1, 4)}, 1, "mechanisms"),
    ],
)
def test_bad_samples_are_refused(samples, chains, message):
    with pytest.raises(ValueError, match=message):
        routing_array(samples, chains)


def test_an_improper_prior_has_no_draws():
    model, _ = build(smoke_config(prior={"name": "none"}))
    with pytest.raises(ValueError, match="improper"):
        prior_samples(model, torch.zeros(1, 4, dtype=torch.long), 2)


def test_without_arviz_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "arviz", None)  # `import arviz` now raises ImportError
    with pytest.raises(ImportError, match=r"pyro_meta_attention\[notebook\]"):
        to_inference_data(fake_samples())
