"""Entropy and argmax shares on the simplex, and routing statistics by token class."""

import math

import pytest
import torch

from pyro_meta_attention.analysis.routing_stats import class_shares
from pyro_meta_attention.data.recall import FILLER, OTHER, RECALL
from pyro_meta_attention.simplex import (
    TRIANGLE,
    argmax_share,
    entropy,
    normalised_entropy,
    ternary_xy,
)


def test_normalised_entropy_bounds():
    assert float(normalised_entropy(torch.full((3,), 1 / 3))) == pytest.approx(1.0)
    assert float(normalised_entropy(torch.tensor([1.0, 0.0, 0.0]))) == 0.0
    assert math.isfinite(float(normalised_entropy(torch.tensor([0.5, 0.5, 0.0]))))


def test_entropy_in_nats_and_argmax_share():
    assert float(entropy(torch.tensor([0.5, 0.5]))) == pytest.approx(math.log(2))
    alpha = torch.tensor([[[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]], [[0.2, 0.5, 0.3], [0.0, 0.0, 1.0]]])
    assert argmax_share(alpha).tolist() == [0.25, 0.25, 0.5]  # over every leading dim


def test_class_shares():
    alpha = torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1]])
    alpha_bar = alpha[None, :, None, :]  # [B=1, T=3, L=1, M=3]
    classes = torch.tensor([[RECALL, FILLER, OTHER]])
    shares = class_shares(alpha_bar, classes)
    assert shares["recall"]["argmax_share"] == [1.0, 0.0, 0.0]
    assert shares["filler"]["argmax_share"] == [0.0, 0.0, 1.0]
    assert shares["other"]["tokens"] == 1


def test_ternary_corners_and_centre():
    assert torch.equal(ternary_xy(torch.eye(3)), TRIANGLE)
    centre = ternary_xy(torch.full((2, 3), 1 / 3, dtype=torch.float64))
    torch.testing.assert_close(centre, torch.tensor([[0.5, math.sqrt(3) / 6]] * 2).double())
    with pytest.raises(ValueError, match="3 mechanisms"):
        ternary_xy(torch.ones(4) / 4)
