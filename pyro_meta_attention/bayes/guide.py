"""The amortised guide q(alpha_t | x; phi): a Dirichlet per token and layer from a small network.

What it reads, with the cost in view: re-running the transformer to read each layer's hidden
state made a prototype's SVI step 1.5x slower; this guide reads only information available
before any attention runs — its own token embedding e_t, a causal depthwise convolution over
the last `context` embeddings (cheap causal context), the salience ||e_t|| / sqrt(E), and the
position min(t, block_size) / block_size (it stays 1 past the training length, where a model with
rotary positions goes on) — and emits all layers' concentrations at once: [B, T, L, M].
With `match_k` = k > 0 it also reads two match bits (`data/kgrams.match_features`): the k bytes
ending at t occurred before with the byte after them inside the local window, or beyond it,
where only full (or linear) attention can copy it — what a local context cannot tell. It then
reads the whole prefix, not the last `context` bytes (`reach`).

Numerical safety: the concentration is squashed into [floor, cap] smoothly in log space,
a = exp(log floor + (log cap - log floor) · sigmoid(raw)). Below ~0.03 Dirichlet reparameterised
gradients grow without bound (|grad| ~1.7e3 at 0.01) and torch's sampler returns exact (1/M, ...)
rows; above the cap the posterior is a near-point mass whose sample gradients vanish while
lgamma terms lose float32 precision. A smooth squash keeps gradients alive at the bounds, which
clamping would cut.

With a hierarchical prior the guide also holds each layer's routing mean mu_l [L, M] as a
point (MAP, a Delta at site `routing_mean_l`), kept where the prior's concentration kappa · mu
stays at or above the guide's floor, so q can always equal p(alpha | mu).

With the `none` prior the same network emits router logits and the guide is a Delta at
softmax(logits): a deterministic router trained by maximum likelihood. With a `fixed-*` prior
the guide is a Delta at the prior's corner (its network is unused).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro.nn import PyroModule

from ..config import GuideConfig, ModelConfig
from ..data.kgrams import match_features
from .priors import RoutingPrior
from .sites import global_scale, routing_mean_site, routing_scale, routing_site, token_plates


def check_representable(prior: RoutingPrior, config: GuideConfig) -> None:
    """Raise ValueError unless the guide's [floor, cap] holds every prior concentration."""
    a = prior.concentration()
    if a is not None and not (config.floor <= float(a.min()) and float(a.max()) <= config.cap):
        raise ValueError(
            f"prior {prior.name!r} concentration {[round(v, 4) for v in a.tolist()]} lies "
            f"outside the guide's [floor, cap] = [{config.floor}, {config.cap}]: q could never "
            "equal the prior and its squashed outputs would start where their gradient vanishes; "
            "lower the guide floor or raise kappa"
        )


class RoutingGuide(PyroModule):
    def __init__(self, model_config: ModelConfig, config: GuideConfig, prior: RoutingPrior) -> None:
        super().__init__()
        if not 0 < config.floor < config.cap:
            raise ValueError(f"need 0 < floor < cap, got floor={config.floor}, cap={config.cap}")
        if config.init not in ("prior", "random"):
            raise ValueError(f"guide init must be 'prior' or 'random', got {config.init!r}")
        check_representable(prior, config)
        self.config = config
        self.prior = prior
        self.n_layer = model_config.n_layer
        self.block_size = model_config.block_size
        self.window = model_config.window
        fixed = prior.fixed_weights()
        if fixed is not None and fixed.ndim == 2 and fixed.shape[0] != self.n_layer:
            raise ValueError(
                f"prior {prior.name!r} lists {fixed.shape[0]} mechanism(s) "
                f"({prior.config.layers!r}) for the network's {self.n_layer} layers"
            )
        if not 0 <= config.match_k <= 8:
            raise ValueError(f"guide match_k must be in 0 .. 8 (0 = off), got {config.match_k}")
        M = prior.n_mechanisms
        E = config.embd
        self.emb = nn.Embedding(model_config.vocab_size, E)
        self.context = nn.Conv1d(E, E, config.context, groups=E)  # depthwise, left-padded
        self.mlp = nn.Sequential(
            nn.Linear(2 * E + 2 + (2 if config.match_k else 0), config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, self.n_layer * M),
        )
        if prior.hierarchical:  # unconstrained routing means, set to the prior's mean below
            self.mean_logits = nn.Parameter(torch.zeros(self.n_layer, M))
            if prior.kappa <= M * config.floor:
                raise ValueError(
                    f"hierarchical prior: kappa {prior.kappa} must exceed M x guide floor "
                    f"{M * config.floor} to hold every routing mean's concentration above the floor"
                )
            with torch.no_grad():
                share = (prior.concentration() - config.floor) / (prior.kappa - M * config.floor)
                share = share.clamp(min=1e-6)
                self.mean_logits.copy_(share.log().float().expand(self.n_layer, M))
        if config.init == "prior":
            self._init_at_prior()

    def _init_at_prior(self) -> None:
        """Zero the last layer and set its bias so that q equals the prior at step 0."""
        last = self.mlp[-1]
        nn.init.zeros_(last.weight)
        a = self.prior.concentration()
        if a is None:  # deterministic router: uniform softmax
            nn.init.zeros_(last.bias)
            return
        lo, hi = math.log(self.config.floor), math.log(self.config.cap)
        u = ((a.log() - lo) / (hi - lo)).clamp(1e-4, 1 - 1e-4)
        with torch.no_grad():
            last.bias.copy_(torch.logit(u).float().repeat(self.n_layer))

    def routing_means(self) -> torch.Tensor | None:
        """Each layer's routing mean mu [L, M] (hierarchical priors; else None): kappa · mu_m =
        floor + (kappa - M · floor) · softmax(logits)_m, never below the guide's floor."""
        if not self.prior.hierarchical:
            return None
        M, kappa, floor = self.prior.n_mechanisms, self.prior.kappa, self.config.floor
        return (floor + (kappa - M * floor) * torch.softmax(self.mean_logits, -1)) / kappa

    def prior_concentration(self) -> torch.Tensor | None:
        """The prior's concentration of alpha per layer [L, M] float64 (at the guide's routing
        means for a hierarchical prior), or None for an improper or fixed prior."""
        means = self.routing_means()
        if means is not None:
            return self.prior.conditional(means.detach().double())
        a = self.prior.concentration()
        return None if a is None else a.expand(self.n_layer, a.numel())

    @property
    def reach(self) -> int | None:
        """Bytes t - reach + 1 .. t decide the routing of t (None: the whole prefix)."""
        return None if self.config.match_k else self.config.context

    def raw(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """x [B, T] int64 -> unconstrained outputs [B, T, L, M].

        x holds positions offset .. offset + T - 1 of the sequence; the convolution sees zeros
        before x[:, 0], so a window x of the last `reach` bytes (or the whole prefix, from
        offset 0) gives its last token exactly what the whole sequence gives it (decoding).
        """
        B, T = x.shape
        e = self.emb(x)  # [B, T, E]
        k = self.config.context
        ctx = self.context(F.pad(e.transpose(1, 2), (k - 1, 0))).transpose(1, 2)  # [B, T, E]
        salience = e.norm(dim=-1, keepdim=True) / math.sqrt(e.shape[-1])  # [B, T, 1]
        positions = torch.arange(offset, offset + T, device=x.device, dtype=e.dtype)
        pos = (positions.clamp(max=self.block_size) / self.block_size).expand(B, T)
        features = [e, ctx, salience, pos[..., None]]  # [B, T, 2E + 2] together
        if self.config.match_k:
            features.append(match_features(x, self.config.match_k, self.window).to(e))
        features = torch.cat(features, dim=-1)  # [B, T, 2E + 2 (+ 2)]
        return self.mlp(features).view(B, T, self.n_layer, -1)

    def router_weights(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Deterministic routing [B, T, L, M]: softmax of the router, or the prior's fixed corner."""
        fixed = self.prior.fixed_weights()
        if fixed is None:
            return torch.softmax(self.raw(x, offset), dim=-1)
        like = self.emb.weight
        return fixed.to(like).expand(*x.shape, self.n_layer, fixed.shape[-1])  # [M] or [L, M]

    def concentration(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Dirichlet concentration [B, T, L, M] in [floor, cap] (Bayesian priors only)."""
        lo, hi = math.log(self.config.floor), math.log(self.config.cap)
        return torch.exp(lo + (hi - lo) * torch.sigmoid(self.raw(x, offset)))

    def posterior_mean(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """E_q[alpha]: [B, T, L, M] (for `none`: the deterministic router's weights)."""
        if self.prior.deterministic:
            return self.router_weights(x, offset)
        a = self.concentration(x, offset)
        return a / a.sum(-1, keepdim=True)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        beta: float = 1.0,
        mask: torch.Tensor | None = None,
        tau: float = 0.0,
        obs_mask: torch.Tensor | None = None,
        route: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Sample every routing site; returns n_layer x alpha [B, T, M] (tau, obs_mask and
        route: model-side only)."""
        B, T = x.shape
        params = self.router_weights(x) if self.prior.deterministic else self.concentration(x)
        means = self.routing_means()
        if means is not None:
            with global_scale(B, T, mask), routing_scale(beta):
                for layer in range(self.n_layer):
                    pyro.sample(routing_mean_site(layer), dist.Delta(means[layer], event_dim=1))
        alphas = []
        with token_plates(B, T, mask):
            for layer in range(self.n_layer):
                if self.prior.deterministic:
                    q = dist.Delta(params[:, :, layer], event_dim=1)
                else:
                    q = dist.Dirichlet(params[:, :, layer])
                with routing_scale(beta):
                    alphas.append(pyro.sample(routing_site(layer), q))
        return alphas
