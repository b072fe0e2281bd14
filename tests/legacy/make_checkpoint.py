"""Write the committed checkpoint of a run made before rotary positions, and what it computed.

Run with the package as it was at commit cb6061f (learned absolute positions, no
`model.positions` field in the config), from a checkout of that commit:

    git worktree add /tmp/old cb6061f
    PYTHONPATH=/tmp/old python tests/legacy/make_checkpoint.py tests/legacy

It trains the smoke configuration (6 steps, seed 0) and writes `checkpoint.pt` and
`expected.pt`: the logits of the forward pass for fixed inputs under the soft posterior mean and
under hard routing, and a greedy hard-routed continuation. `test_legacy.py` checks that today's
code loads, evaluates and decodes this checkpoint to the same numbers.
"""

import shutil
import sys
import tempfile
from pathlib import Path

import torch

from pyro_meta_attention.config import smoke_config
from pyro_meta_attention.decoding import Decoder, GuideRouter, generate
from pyro_meta_attention.mechanisms.cost import cost_model_for
from pyro_meta_attention.policies import assign, parse_policy
from pyro_meta_attention.training.checkpoint import load_checkpoint
from pyro_meta_attention.training.svi import fit


def outputs(config, model, guide, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the checkpoint computes for inputs x [B, block_size]: logits under the soft
    posterior mean and under hard routing, and a greedy hard-routed continuation of x[:1, :5]."""
    cost = cost_model_for(config.model).normalised()
    with torch.no_grad():
        alphas = list(guide.posterior_mean(x).unbind(2))
        soft = model.net(x, alphas)
        hard = model.net(x, alphas, [assign(parse_policy("hard"), a, cost) for a in alphas])
        decoder = Decoder(model.net, GuideRouter(guide, parse_policy("hard"), cost))
        tokens = generate(decoder, x[:1, :5], config.model.block_size - 5, 0.0, None, None)
    return {"soft": soft, "hard": hard, "generated": tokens}


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fit(smoke_config(), out=tmp)
        shutil.copy(Path(tmp) / "checkpoint.pt", out / "checkpoint.pt")
    config, model, guide = load_checkpoint(out / "checkpoint.pt")
    x = torch.randint(
        0, 256, (2, config.model.block_size), generator=torch.Generator().manual_seed(0)
    )
    torch.save({"x": x, **outputs(config, model, guide, x)}, out / "expected.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
