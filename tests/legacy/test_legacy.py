"""A checkpoint written before rotary positions (learned absolute positions, no
`model.positions` in its config) loads, evaluates and decodes to the numbers it gave then
(`make_checkpoint.py` says how both files were made)."""

from pathlib import Path

import torch

from pyro_meta_attention.decoding import Decoder, GuideRouter, generate
from pyro_meta_attention.mechanisms.cost import cost_model_for
from pyro_meta_attention.policies import assign, parse_policy
from pyro_meta_attention.training.checkpoint import load_checkpoint

HERE = Path(__file__).parent


def test_an_old_checkpoint_gives_what_it_gave_before_rotary_positions():
    config, model, guide = load_checkpoint(HERE / "checkpoint.pt")
    expected = torch.load(HERE / "expected.pt", weights_only=True)
    assert config.model.positions == "learned" and model.net.pos_emb is not None
    x = expected["x"]
    cost = cost_model_for(config.model).normalised()
    with torch.no_grad():
        alphas = list(guide.posterior_mean(x).unbind(2))
        soft = model.net(x, alphas)
        hard = model.net(x, alphas, [assign(parse_policy("hard"), a, cost) for a in alphas])
        decoder = Decoder(model.net, GuideRouter(guide, parse_policy("hard"), cost))
        tokens = generate(decoder, x[:1, :5], config.model.block_size - 5, 0.0, None, None)
    # The same float32 operations in the same order as when the file was written: equal bits.
    assert torch.equal(soft, expected["soft"]) and torch.equal(hard, expected["hard"])
    assert torch.equal(tokens, expected["generated"])
