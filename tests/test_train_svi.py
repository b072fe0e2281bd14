"""experiments/train_svi.py: a preset's settings survive the flags the user did not give."""

from train_svi import config_from_args, parse_args

from pyro_meta_attention.config import PRESETS


def test_the_routing_recipe_preset_keeps_its_prior_and_schedule():
    config = config_from_args(parse_args(["--preset", "mqar-routing"]))
    assert config == PRESETS["mqar-routing"]()
    assert config.prior.strength == 0.5 and config.train.full_warmup == 1000
    assert (config.train.harden_final, config.train.harden_start) == (1.0, 1000)


def test_flags_and_set_override_the_preset():
    config = config_from_args(
        parse_args(["--preset", "mqar-routing", "--strength", "2", "--set", "train.kl_weight=0.5"])
    )
    assert config.prior.strength == 2.0 and config.train.kl_weight == 0.5
    assert config_from_args(parse_args([])) == PRESETS["default"]()


def test_the_text_preset_is_long_context_with_a_narrow_window(tmp_path):
    corpus = tmp_path / "c.txt"
    config = config_from_args(parse_args(["--preset", "text512", "--data", str(corpus)]))
    assert config.data.path == str(corpus) and config.model.token_shift
    assert (config.model.block_size, config.model.window) == (512, 32)
    assert config.override(data={"path": None}) == PRESETS["text512"]()
