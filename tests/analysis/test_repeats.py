"""Repeat classes on constructed sequences whose classes are known, against a brute-force
definition, and the docstring's example."""

import pytest
import torch

from pyro_meta_attention.analysis.repeats import (
    LONG,
    NOVEL,
    REPEAT_CLASSES,
    SHORT,
    repeat_classes,
    with_repeat_classes,
)
from pyro_meta_attention.data.batches import Batch


def classify(seq: list[int], k: int, window: int) -> list[int]:
    """x = seq[:-1], y = seq[1:] -> classes of every position."""
    x, y = torch.tensor([seq[:-1]]), torch.tensor([seq[1:]])
    return repeat_classes(x, y, k, window)[0].tolist()


def brute_force(x: list[int], y: list[int], k: int, window: int) -> list[int]:
    """The definition, one position at a time."""
    out = []
    for t in range(len(x)):
        hits = [
            s
            for s in range(k - 1, t)
            if t >= k - 1 and x[s - k + 1 : s + 1] == x[t - k + 1 : t + 1] and y[s] == y[t]
        ]
        if not hits:
            out.append(NOVEL)
        else:
            out.append(SHORT if t - (max(hits) + 1) < window else LONG)
    return out


def test_the_docstring_example():
    x = torch.tensor([[1, 2, 3, 9, 9, 9, 9, 1, 2, 3]])
    y = torch.tensor([[2, 3, 9, 9, 9, 9, 1, 2, 3, 9]])
    assert repeat_classes(x, y, k=3, window=4)[0, -1].item() == REPEAT_CLASSES.index("long-repeat")


def test_a_phrase_repeated_far_then_near():
    """'abcde' + 20 distinct bytes + 'abcde' + 'abcde': the second copy's continuation is a long
    repeat (its source 25 back, window 8), the third copy's a short one."""
    filler = list(range(100, 120))
    seq = [1, 2, 3, 4, 5] + filler + [1, 2, 3, 4, 5] + [1, 2, 3, 4, 5, 6]
    got = classify(seq, k=3, window=8)
    # x positions: first copy 0..4, filler 5..24, second copy 25..29, third copy 30..34
    assert got[:25] == [NOVEL] * 25
    assert got[27:29] == [LONG, LONG]  # "123"->4, "234"->5: sources end at 2, 3 (24 back)
    assert got[29] == NOVEL  # "345" then 1 here, then 100 (filler) the first time
    assert got[32:34] == [SHORT, SHORT]  # the same k-grams 5 back
    assert got[34] == NOVEL  # "345" -> 6: never seen followed by 6


def test_the_following_byte_must_repeat_too():
    """The same k-gram followed by another byte is not a repeat."""
    assert classify([7, 8, 9, 1, 50, 51, 52, 7, 8, 9, 2], k=3, window=2)[-1] == NOVEL
    assert classify([7, 8, 9, 1, 50, 51, 52, 7, 8, 9, 1], k=3, window=2)[-1] == LONG


def test_the_window_edge():
    """The copied byte x_{s+1} must lie in t - w + 1 .. t for a short repeat."""
    seq = [5, 6, 7, 40, 41, 42, 5, 6, 7]  # t = 7 ("5 6" ends at x[7]); source s = 1, x_{s+1} = 7
    x, y = seq[:-1], seq[1:]
    # t - (s + 1) = 7 - 2 = 5: inside a window of 6, outside a window of 5
    assert classify(seq, k=2, window=6)[7] == SHORT
    assert classify(seq, k=2, window=5)[7] == LONG
    assert brute_force(x, y, 2, 5)[7] == LONG


@pytest.mark.parametrize("k,window", [(1, 1), (2, 3), (4, 16), (8, 5)])
def test_matches_the_definition_on_random_text(k, window):
    """Low-entropy random bytes (alphabet of 4) so that every class occurs."""
    gen = torch.Generator().manual_seed(k + window)
    seq = torch.randint(0, 4, (3, 201), generator=gen)
    x, y = seq[:, :-1], seq[:, 1:]
    got = repeat_classes(x, y, k, window)
    for b in range(3):
        assert got[b].tolist() == brute_force(x[b].tolist(), y[b].tolist(), k, window)
    if k <= 4:
        assert set(got.flatten().tolist()) == {NOVEL, SHORT, LONG}


def test_bad_input():
    x = torch.tensor([[255, 0, 255, 0, 255]])
    with pytest.raises(ValueError, match="window"):
        repeat_classes(x, x, 2, 0)
    batch = with_repeat_classes([Batch(x, x)], 2, 1)[0]
    assert batch.classes.dtype == torch.uint8 and batch.classes.shape == x.shape


def test_high_bytes_at_k_8():
    """At k = 8 a code with byte >= 128 on top is negative (all 255s: -1, the fill value)."""
    seq = [255] * 12 + [254] * 12 + [255] * 12
    x, y = torch.tensor([seq[:-1]]), torch.tensor([seq[1:]])
    got = repeat_classes(x, y, 8, 4)[0].tolist()
    assert got == brute_force(seq[:-1], seq[1:], 8, 4)
    assert got[8] == SHORT
