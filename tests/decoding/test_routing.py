"""Routing at decode time: the same weights and assignments as the forward pass's routing, the
causal budget, the epistemic uncertainty, and the guide's draws against pyro's Predictive."""

import pyro
import pytest
import torch
from routed_models import decode, make_decoder, routed_model, tokens

from pyro_meta_attention.analysis.uncertainty import posterior_samples
from pyro_meta_attention.bayes.sites import routing_site
from pyro_meta_attention.data.kgrams import match_features
from pyro_meta_attention.decoding.routing import OnlineBudget, epistemic_uncertainty
from pyro_meta_attention.mechanisms.cost import cost_model_for
from pyro_meta_attention.policies import assign, parse_policy
from pyro_meta_attention.simplex import entropy

TOL = 1e-12  # float64 guide outputs; the step sees a 4-byte window, the forward pass all bytes


@pytest.mark.parametrize("policy", ["soft", "hard", "threshold:0.5"])
@pytest.mark.parametrize("prior", ["compute-dirichlet", "none", "fixed-local"])
def test_per_token_routing_is_the_forward_pass_routing(prior, policy):
    """For per-token policies the decoder's routing of every position, prompt and steps, is the
    routing the forward pass computes from the whole sequence."""
    config, model, guide = routed_model(prior)
    decoder = make_decoder(config, model, guide, policy)
    x = tokens(3, 23)
    decode(decoder, x, prompt=6)
    route = decoder.route
    with torch.no_grad():
        alpha = guide.posterior_mean(x)  # [B, T, L, M]
    torch.testing.assert_close(route.alpha, alpha, rtol=0, atol=TOL)
    cost = cost_model_for(config.model).normalised()
    for layer in range(config.model.n_layer):
        want = assign(parse_policy(policy), alpha[:, :, layer], cost)
        assert torch.equal(route.assignment[:, :, layer], want)


@pytest.mark.parametrize("prior", ["compute-dirichlet", "none"])
def test_a_guide_with_match_features_reads_the_whole_prefix(prior):
    """match_k = 2 on 4 symbols: near and far matches (window 8) at T = 29; each step must see
    every earlier byte, and a step that saw only the last `context` bytes would route otherwise."""
    config, model, guide = routed_model(prior, match_k=2)
    decoder = make_decoder(config, model, guide, "threshold:0.5")
    x = torch.randint(0, 4, (2, 29), generator=torch.Generator().manual_seed(1))
    feats = match_features(x, 2, config.model.window)
    assert feats[..., 0].any() and feats[..., 1].any()
    decode(decoder, x, prompt=3)
    with torch.no_grad():
        alpha = guide.posterior_mean(x)  # [B, T, L, M]
        c = config.guide.context
        local = torch.stack(
            [guide.posterior_mean(x[:, t - c + 1 : t + 1], t - c + 1)[:, -1] for t in range(c, 29)],
            1,
        )
    torch.testing.assert_close(decoder.route.alpha, alpha, rtol=0, atol=TOL)
    assert (local - alpha[:, c:]).abs().max() > 1e-3


def test_budget_is_kept_causally_over_the_sequence_so_far():
    """The prompt is routed by the offline policy; each new token stays soft exactly when the
    running mean projected cost of its sequence and layer, with it soft, is <= Y."""
    config, model, guide = routed_model()
    decoder = make_decoder(config, model, guide, "budget:1.2")
    x = tokens(2, 30)
    prompt = 7
    decode(decoder, x, prompt)
    route = decoder.route
    cost = cost_model_for(config.model).normalised()
    for layer in range(config.model.n_layer):
        alpha, assignment = route.layer(layer)
        offline = assign(parse_policy("budget:1.2"), alpha[:, :prompt], cost)
        assert torch.equal(assignment[:, :prompt], offline)
        paid = torch.where(assignment == -1, cost.sum(), cost[assignment.clamp(min=0)])  # [B, T]
        for t in range(prompt, x.shape[1]):
            soft_mean = (paid[:, :t].sum(1) + cost.sum()) / (t + 1)
            assert torch.equal(assignment[:, t] == -1, soft_mean <= 1.2 + 1e-12)
            hard = assignment[:, t] >= 0
            assert torch.equal(assignment[:, t][hard], alpha[:, t].argmax(-1)[hard])
    steps = route.assignment[:, prompt:]
    assert bool((steps == -1).any()) and bool((steps >= 0).any())  # both kinds occur


def test_budget_hardens_when_soft_would_overspend_even_if_hard_does_too():
    budget = OnlineBudget(0.5, torch.tensor([1.0, 0.8, 0.4], dtype=torch.float64))
    budget.start(torch.tensor([[[2]], [[0]]]))  # [B = 2, T = 1, L = 1]: spent 0.4 and 1.0
    assert budget.next(torch.tensor([[1], [0]])).tolist() == [[1], [0]]  # 0.4+2.2 > 1.0; 1+2.2
    assert budget.spent.flatten().tolist() == pytest.approx([1.2, 2.0])
    generous = OnlineBudget(3.0, budget.cost)
    generous.start(torch.tensor([[[2]]]))
    assert generous.next(torch.tensor([[0]])).tolist() == [[-1]]  # (0.4 + 2.2) / 2 <= 3


def test_epistemic_uncertainty_matches_monte_carlo():
    """Closed form against 200,000 Dirichlet draws (Monte Carlo error about 1e-3 here)."""
    a = torch.tensor([[0.3, 0.5, 2.0], [5.0, 5.0, 5.0], [40.0, 1.0, 0.2]], dtype=torch.float64)
    torch.manual_seed(0)
    draws = torch.distributions.Dirichlet(a).sample((200_000,))  # [S, 3, M]
    mc = entropy(draws.mean(0)) - entropy(draws).mean(0)
    torch.testing.assert_close(epistemic_uncertainty(a), mc, rtol=0, atol=5e-3)
    assert bool((epistemic_uncertainty(a) > 0).all())


def test_a_deterministic_router_has_no_epistemic_uncertainty():
    config, model, guide = routed_model("none")
    decoder = make_decoder(config, model, guide, "hard")
    decode(decoder, tokens(1, 12), prompt=3)
    assert bool((decoder.route.epistemic == 0).all())


def per_step_draws(router, x: torch.Tensor, order: str) -> list[torch.Tensor]:
    """Draw alpha of every layer and position of x [1, T] from the decoder's per-step guide:
    token by token (`order="token"`, as decoding must) or layer by layer ("layer")."""
    T, context = x.shape[1], router.context
    steps = [
        router.distributions(x[:, max(0, t - context + 1) : t + 1], max(0, t - context + 1))
        for t in range(T)
    ]  # T x L distributions of batch shape [1, 1]
    L = len(steps[0])
    draws = [[None] * T for _ in range(L)]
    pairs = [(t, l) for t in range(T) for l in range(L)]
    for t, l in pairs if order == "token" else sorted(pairs, key=lambda p: p[1]):
        draws[l][t] = steps[t][l].sample()
    return [torch.cat(row, 1) for row in draws]  # L x [1, T, M]


PREDICTIVE_GUIDE_RUNS = 2  # pyro 1.9: runs the guide to guess the plate nesting, to list the
# sites, and then once per sample (`pyro/infer/predictive.py`, `_predictive`)


@pytest.mark.parametrize("prior", ["compute-dirichlet", "none"])
def test_predictive_draws_equal_the_per_step_guide_in_the_same_order(prior):
    """pyro's Predictive over a prompt gives the draws of the guide's third run (two runs go to
    its set-up), each layer's alpha for all tokens, layer after layer, from the global RNG. The
    decoder's per-step guide gives the same distributions token by token. After the same two
    runs and drawn in Predictive's order they are the same numbers (torch's Dirichlet sampler
    draws element by element); a decoder must draw token by token, so with L > 1 its draws are
    a permutation of the random stream, not Predictive's. With L = 1 and B = 1 the orders
    coincide. (A Delta guide, `none`, draws nothing: always equal.)"""
    x = tokens(1, 13)
    for n_layer, orders in ((1, ("token", "layer")), (2, ("layer",))):
        config, model, guide = routed_model(prior, n_layer=n_layer)
        router = make_decoder(config, model, guide, "soft").router
        pyro.set_rng_seed(5)
        want = posterior_samples(model, guide, x, num_samples=1)
        for order in orders:
            pyro.set_rng_seed(5)
            for _ in range(PREDICTIVE_GUIDE_RUNS):
                guide(x)
            got = per_step_draws(router, x, order)
            for layer in range(n_layer):
                want_layer = want[routing_site(layer)][0]
                torch.testing.assert_close(got[layer], want_layer, rtol=0, atol=TOL)
    pyro.set_rng_seed(5)
    for _ in range(PREDICTIVE_GUIDE_RUNS):
        guide(x)
    got = per_step_draws(router, x, "token")
    differs = not torch.allclose(got[1], want[routing_site(1)][0])
    assert differs == (prior == "compute-dirichlet")  # token by token, two layers
