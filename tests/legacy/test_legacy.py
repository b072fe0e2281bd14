"""A checkpoint written before rotary positions (learned absolute positions, no
`model.positions` in its config) loads, evaluates and decodes to the numbers it gave then
(`make_checkpoint.py` says how both files were made)."""

from pathlib import Path

import torch
from make_checkpoint import outputs

from pyro_meta_attention.training.checkpoint import load_checkpoint

HERE = Path(__file__).parent


def test_an_old_checkpoint_gives_what_it_gave_before_rotary_positions():
    config, model, guide = load_checkpoint(HERE / "checkpoint.pt")
    expected = torch.load(HERE / "expected.pt", weights_only=True)
    assert config.model.positions == "learned" and model.net.pos_emb is not None
    got = outputs(config, model, guide, expected["x"])
    # The same float32 operations in the same order as when the file was written: equal bits.
    for name in ("soft", "hard", "generated"):
        assert torch.equal(got[name], expected[name]), name
