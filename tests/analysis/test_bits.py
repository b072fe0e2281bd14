import math

import pytest

from pyro_meta_attention.analysis.bits import bits_per_byte


def test_uniform_byte_is_eight_bits():
    assert bits_per_byte(math.log(256)) == pytest.approx(8.0, rel=1e-15)


def test_none_stays_none():
    assert bits_per_byte(None) is None
