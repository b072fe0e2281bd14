"""The SVI loop's schedules: KL weight, learning rate, hardening threshold."""

import pytest

from pyro_meta_attention.training.schedules import hardening_tau, kl_beta, lr_factor


def test_hardening_schedule():
    assert hardening_tau(5, 10, 20, 0.5) == 0.0
    assert hardening_tau(15, 10, 20, 0.5) == pytest.approx(0.25)
    assert hardening_tau(30, 10, 20, 0.5) == 0.5
    assert hardening_tau(30, 10, 20, 0.0) == 0.0


def test_kl_weight_rises_linearly_to_its_final_value():
    assert kl_beta(0, 1.0, 4) == pytest.approx(0.25)
    assert kl_beta(3, 1.0, 4) == 1.0 and kl_beta(100, 0.5, 4) == 0.5
    assert kl_beta(0, 0.7, 0) == 0.7  # no annealing


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == 1.0
    assert lr_factor(10, 10, 100) == pytest.approx(1.0)
    assert lr_factor(100, 10, 100) == pytest.approx(0.1)
