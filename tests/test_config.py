import json

import pytest

from pyro_meta_attention.config import ModelConfig, RunConfig, smoke_config


def test_config_round_trips_through_json():
    config = smoke_config(prior={"name": "none"}, train={"steps": 3})
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_bad_model_config():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="window"):
        ModelConfig(window=0)
    with pytest.raises(ValueError, match="tokens are bytes"):
        ModelConfig(vocab_size=10)  # was an IndexError in the embedding (issue 20)
    with pytest.raises(ValueError, match="window 16 > block_size 1"):
        ModelConfig(block_size=1)  # was a message about the prior's concentration
    with pytest.raises(ValueError, match="unknown config sections"):
        RunConfig.from_dict({"bogus": {}})
