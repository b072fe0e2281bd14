"""The MQAR task: answers are the keys' values, every query lies beyond the window, only the
answers are scored, classes mark keys, values and queries; seeded and fixed where it must be."""

import doctest

import pytest
import torch

import pyro_meta_attention.data.mqar as mqar
from pyro_meta_attention.config import mqar_config
from pyro_meta_attention.data.mqar import KEY, OTHER, QUERY, VALUE, MQARConfig, MQARTask
from pyro_meta_attention.data.sources import data_for, held_out_batches


def test_docstring_example():
    assert doctest.testmod(mqar).failed == 0


@pytest.mark.parametrize("config", [MQARConfig(), MQARConfig(seq_len=40, pairs=6, window=16)])
def test_answers_keys_distances_and_classes(config):
    b = MQARTask(config).batch(32, torch.Generator().manual_seed(1))
    B, T, P = 32, config.seq_len, config.pairs
    assert b.x.shape == b.y.shape == b.mask.shape == b.classes.shape == (B, T)
    assert (b.mask.sum(1) == P).all() and ((b.classes == QUERY) == b.mask).all()
    for i in range(B):
        x, y = b.x[i].tolist(), b.y[i].tolist()
        keys, values = x[0 : 2 * P : 2], x[1 : 2 * P : 2]
        assert len(set(keys)) == P  # distinct keys
        assert all(config.key_start <= k < config.key_start + config.key_vocab for k in keys)
        assert all(
            config.value_start <= v < config.value_start + config.value_vocab for v in values
        )
        assert (
            b.classes[i, 0 : 2 * P : 2].eq(KEY).all()
            and b.classes[i, 1 : 2 * P : 2].eq(VALUE).all()
        )
        for t in b.mask[i].nonzero().flatten().tolist():
            k = keys.index(x[t])  # the query repeats a key ...
            assert y[t] == values[k]  # ... and its answer is that key's value
            assert t - 2 * k > config.window  # beyond a local window of that size
        rest = [t for t in range(2 * P, T) if not b.mask[i, t]]
        assert all(x[t] == mqar.FILLER_BYTE and b.classes[i, t] == OTHER for t in rest)


def test_seeded_and_fixed_validation():
    task = MQARTask(MQARConfig())
    a = task.batch(4, torch.Generator().manual_seed(3))
    b = task.batch(4, torch.Generator().manual_seed(3))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    v1, v2 = task.val_batches(4, 2), task.val_batches(4, 2)
    assert all(
        torch.equal(u, v) for p, q in zip(v1, v2, strict=True) for u, v in zip(p, q, strict=True)
    )
    assert not torch.equal(v1[0].x, v1[1].x)


def test_preset_names_the_task_at_the_model_window():
    config = mqar_config()
    task = data_for(config)
    assert isinstance(task, MQARTask)
    assert (
        task.config.window == config.model.window and task.config.seq_len == config.model.block_size
    )
    assert task.config.chance == 1 / 128 and len(task.sha256) == 64
    (batch,) = held_out_batches(task, config, batches=1)
    assert batch.x.shape == (config.train.batch_size, config.model.block_size)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(pairs=0), "pairs"),
        (dict(seq_len=16, pairs=4, window=8), "no room"),
        (dict(key_start=100, value_start=120), "overlap"),
        (dict(value_start=200), "bytes"),
    ],
)
def test_bad_sizes_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MQARConfig(**kwargs)
