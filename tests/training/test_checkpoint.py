"""Checkpoints load with `weights_only=True`: code hidden in one is refused without running,
and every unusable file is one CheckpointError naming it, found before the param store is
touched."""

import pyro
import pytest
import torch
from checkpoint_files import BAD, bad_checkpoint, genuine

from pyro_meta_attention.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
)


def test_a_genuine_checkpoint_is_plain_data(tmp_path):
    state = genuine(tmp_path / "ck.pt")  # weights_only=True, no allow-list
    assert all(isinstance(v, str) for v in state["versions"].values())
    assert read_checkpoint(tmp_path / "ck.pt").finished


def test_a_pickled_callable_is_refused_without_running_it(tmp_path):
    path = bad_checkpoint("pickled callable", tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="posix.system"):
        load_checkpoint(path)
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("kind", list(BAD))
def test_an_unusable_checkpoint_is_one_error_and_keeps_the_param_store(kind, tmp_path):
    pyro.param("kept", torch.ones(2))
    path = bad_checkpoint(kind, tmp_path / "ck.pt")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert BAD[kind] in message and str(path) in message and "\n" not in message
    assert "kept" in pyro.get_param_store()
