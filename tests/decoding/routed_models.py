"""A float64 smoke-sized network and guide whose routing varies from token to token."""

import torch

from pyro_meta_attention.config import smoke_config
from pyro_meta_attention.decoding import Decoder, GuideRouter
from pyro_meta_attention.mechanisms.cost import cost_model_for
from pyro_meta_attention.policies import parse_policy
from pyro_meta_attention.training.build import build

# smoke_config: block_size 32, window 8, chunk 8, H = 2, D = 16, L = 2.
# Budget 1.2 lies between the costs of a hard token (c = 1.00, 1.02, 0.43) and of a soft one
# (sum c = 2.45), so it leaves some tokens soft and hardens the others.
POLICIES = ["soft", "hard", "threshold:0.5", "budget:1.2"]
PRIORS = [
    "compute-dirichlet",
    "none",
    "cost-penalised",
    "fixed-full",
    "fixed-linear",
    "fixed-local",
    "fixed-layers",
]
LAYERS = "local,full"  # fixed-layers: layer 0 local, layer 1 full (n_layer 2)


# (positions, rope_linear): learned positions (runs before rotary), rotary for full and local
# only (the default), rotary for all three mechanisms.
POSITIONS = [("learned", False), ("rope", False), ("rope", True)]


def routed_model(
    prior: str = "compute-dirichlet",
    token_shift: bool = True,
    n_layer: int = 2,
    positions: str = "rope",
    rope_linear: bool = False,
    match_k: int = 0,
):
    """(config, model, guide) in float64; the guide's last layer is random (seeded), not at the
    prior, so its routing differs from token to token."""
    model = {"token_shift": token_shift, "n_layer": n_layer}
    model |= {"positions": positions, "rope_linear": rope_linear}
    layers = {"layers": LAYERS} if prior == "fixed-layers" else {}
    config = smoke_config(prior={"name": prior, **layers}, model=model, guide={"match_k": match_k})
    torch.manual_seed(0)
    model, guide = build(config)
    model, guide = model.double().eval(), guide.double().eval()
    with torch.no_grad():
        guide.mlp[-1].weight.normal_(0.0, 1.0)
    return config, model, guide


def make_decoder(config, model, guide, policy: str) -> Decoder:
    cost = cost_model_for(config.model).normalised()
    return Decoder(model.net, GuideRouter(guide, parse_policy(policy), cost))


def tokens(B: int, T: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (B, T), generator=torch.Generator().manual_seed(seed))


def decode(decoder: Decoder, x: torch.Tensor, prompt: int) -> torch.Tensor:
    """Prefill x[:, :prompt], then feed the rest one token per step: logits [B, T, V]."""
    logits = [decoder.prefill(x[:, :prompt])]
    for t in range(prompt, x.shape[1]):
        logits.append(decoder.step(x[:, t])[:, None])
    return torch.cat(logits, 1)
