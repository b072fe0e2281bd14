"""Routing samples as an `arviz.InferenceData`, for ArviZ's summaries and plots.

    samples = posterior_samples(model, guide, x, num_samples=400)   # site -> [S, B, T, M]
    idata = to_inference_data(samples, chains=4, x=x)
    az.summary(idata, coords={"layer": 0, "sequence": 0, "position": [3, 7]})
    az.plot_forest(idata, coords={"layer": 1, "sequence": 0, "position": slice(0, 8)})

The routing sites alpha_0 .. alpha_{L-1} become one variable `alpha` with dimensions
(chain, draw, layer, sequence, position, mechanism); mechanism coordinates are the names of
`MECHANISMS`. Other sites of the dict (such as `next_byte`) are left out. The guide's draws are
independent, so splitting the S draws into `chains` equal chains (draw s goes to chain
s // (S / chains)) is a valid set of independent chains: R-hat is ~1 and the effective sample
size ~S by construction, a check of the sampler rather than of convergence. `prior` takes a dict
of the same form (draws of the prior) for the `prior` group, `x` [B, T] the input bytes for
`constant_data`.

ArviZ is optional (`pip install "pyro_meta_attention[notebook]"`); without it the converter
raises ImportError saying so, and nothing else in the package needs it.
"""

from __future__ import annotations

from typing import Any

import torch

from ..bayes.sites import ROUTING_PREFIX
from ..mechanisms import MECHANISMS

VARIABLE = "alpha"  # the InferenceData variable holding every layer's routing weights
DIMS = ("layer", "sequence", "position", "mechanism")  # after (chain, draw)


def _arviz():
    try:
        import arviz
    except ImportError:
        raise ImportError(
            "to_inference_data needs ArviZ, an optional dependency: "
            "pip install 'pyro_meta_attention[notebook]' (or pip install 'arviz<1')"
        ) from None
    return arviz


def routing_array(samples: dict[str, torch.Tensor], chains: int = 1) -> torch.Tensor:
    """The routing sites of a Predictive dict stacked by layer and split into chains:
    {"alpha_l": [S, B, T, M]} -> [chains, S / chains, L, B, T, M] float64 on the CPU."""
    layers = sorted(
        (int(site.removeprefix(ROUTING_PREFIX)), value)
        for site, value in samples.items()
        if site.startswith(ROUTING_PREFIX) and site.removeprefix(ROUTING_PREFIX).isdigit()
    )
    if not layers:
        raise ValueError(f"no routing site ({ROUTING_PREFIX}<layer>) among {sorted(samples)}")
    if [layer for layer, _ in layers] != list(range(len(layers))):
        raise ValueError(f"routing sites must be layers 0..L-1, got {sorted(samples)}")
    shapes = {tuple(value.shape) for _, value in layers}
    if len(shapes) != 1 or len(next(iter(shapes))) != 4:
        raise ValueError(f"every routing site must be [S, B, T, M] alike, got {sorted(shapes)}")
    S, B, T, width = next(iter(shapes))
    if width != len(MECHANISMS):
        raise ValueError(f"the last dim must be the {len(MECHANISMS)} mechanisms, got {width}")
    if chains < 1 or S % chains:
        raise ValueError(f"chains must be >= 1 and divide the {S} draws, got {chains}")
    stacked = torch.stack([value.detach().cpu().double() for _, value in layers], dim=1)
    return stacked.view(chains, S // chains, len(layers), B, T, width)


def to_inference_data(
    samples: dict[str, torch.Tensor],
    chains: int = 1,
    prior: dict[str, torch.Tensor] | None = None,
    x: torch.Tensor | None = None,
) -> Any:
    """`arviz.InferenceData` of routing samples: `posterior` (and `prior`) hold `alpha`
    [chain, draw, layer, sequence, position, mechanism]; `constant_data` holds x [B, T]."""
    az = _arviz()
    post = routing_array(samples, chains).numpy()
    L, B, T, _ = post.shape[2:]
    coords = {
        "layer": list(range(L)),
        "sequence": list(range(B)),
        "position": list(range(T)),
        "mechanism": list(MECHANISMS),
    }
    groups: dict[str, Any] = {"posterior": {VARIABLE: post}}
    dims: dict[str, list[str]] = {VARIABLE: list(DIMS)}
    if prior is not None:
        pre = routing_array(prior, 1).numpy()
        if pre.shape[2:] != post.shape[2:]:
            raise ValueError(
                f"prior draws {pre.shape[2:]} do not match the posterior's {(L, B, T)}"
            )
        groups["prior"] = {VARIABLE: pre}
    if x is not None:
        if tuple(x.shape) != (B, T):
            raise ValueError(f"x must be [B, T] = [{B}, {T}], got {list(x.shape)}")
        groups["constant_data"] = {"x": x.detach().cpu().numpy()}
        dims["x"] = ["sequence", "position"]
    return az.from_dict(**groups, coords=coords, dims=dims)
