"""data/kgrams.py: packed k-gram codes, earlier occurrences by sorting against a brute-force
search, and the guide's match feature on constructed sequences."""

import pytest
import torch

from pyro_meta_attention.data.kgrams import earlier_occurrences, kgram_codes, match_features


def test_codes_pack_k_bytes_exactly_and_bad_input():
    x = torch.tensor([[255, 0, 255, 0, 255]])
    codes = kgram_codes(x, 2)
    assert codes[0, 0] == -1 and codes[0, 1] == codes[0, 3] and codes[0, 2] == codes[0, 4]
    assert codes[0, 1] != codes[0, 2]
    with pytest.raises(ValueError, match="k must be"):
        kgram_codes(x, 9)


def brute_force(x: list[int], k: int) -> tuple[list[int], list[int]]:
    """(first, nearest) earlier end of the k-gram ending at t, one position at a time."""
    first, nearest = [], []
    for t in range(len(x)):
        hits = [
            s
            for s in range(k - 1, t)
            if t >= k - 1 and x[s - k + 1 : s + 1] == x[t - k + 1 : t + 1]
        ]
        first.append(hits[0] if hits else -1)
        nearest.append(hits[-1] if hits else -1)
    return first, nearest


@pytest.mark.parametrize("k", [1, 2, 3, 8])
def test_earlier_occurrences_match_brute_force(k):
    g = torch.Generator().manual_seed(k)
    x = torch.randint(0, 3, (4, 67), generator=g)  # 3 symbols: many repeats, odd length
    x[1, :] = 255  # one k-gram everywhere (byte 255 fills the top bits at k = 8)
    first, nearest = earlier_occurrences(x, k)
    for b in range(x.shape[0]):
        want_first, want_nearest = brute_force(x[b].tolist(), k)
        assert first[b].tolist() == want_first
        assert nearest[b].tolist() == want_nearest


def test_match_features_near_and_far():
    #            t: 0  1  2  3  4  5  6  7  8  9
    x = torch.tensor([[1, 2, 7, 7, 7, 1, 2, 7, 1, 2]])
    got = match_features(x, k=2, window=3)  # [1, T, 2]: (near, far)
    # "1 2" ends at 1, 6, 9. At t = 6 the byte after s = 1 is x_2, t - 2 = 4 >= 3: far only.
    # At t = 9 the nearest (s = 6) gives x_7, 9 - 7 = 2 < 3: near; the first (s = 1): far.
    assert got[0, 6].tolist() == [0.0, 1.0]
    assert got[0, 9].tolist() == [1.0, 1.0]
    # "7 7" ends at 3, 4: at t = 4 the byte after s = 3 is x_4 itself, 0 < 3: near only
    assert got[0, 4].tolist() == [1.0, 0.0]
    assert got[0, :2].sum() == 0 and got.dtype == torch.get_default_dtype()
