import pytest
import torch

from pyro_meta_attention.data.batches import sample_batch, val_windows
from pyro_meta_attention.data.corpus import BUILTIN, CorpusError, builtin_bytes, load_corpus


def test_builtin_corpus_is_deterministic_and_capped():
    a = builtin_bytes(50_000)
    assert a == builtin_bytes(50_000)
    assert len(a) == 50_000
    corpus = load_corpus(None, block_size=32, max_bytes=50_000)
    assert corpus.name == BUILTIN and corpus.n_bytes == 50_000
    assert corpus.val.numel() == 5_000  # the last 10%


def test_split_is_contiguous(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(bytes(range(256)) * 4)
    corpus = load_corpus(str(path), block_size=8, max_bytes=10_000, val_fraction=0.25)
    joined = torch.cat([corpus.train, corpus.val])
    assert bytes(joined.tolist()) == path.read_bytes()
    assert corpus.val.numel() == 256


@pytest.mark.parametrize("content", [None, b"", b"abc"])
def test_unusable_files_raise_corpus_error(corpus_file, content):
    path = corpus_file(content)
    with pytest.raises(CorpusError, match="not found|empty|too short"):
        load_corpus(str(path), block_size=16, max_bytes=1000)


def test_directory_is_not_a_corpus(tmp_path):
    with pytest.raises(CorpusError, match="not a file"):
        load_corpus(str(tmp_path), block_size=16, max_bytes=1000)


def test_batches_are_shifted_windows():
    data = torch.arange(200, dtype=torch.uint8)
    x, y = sample_batch(data, 4, 10, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 10) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    batches = val_windows(data, batch_size=3, block_size=10, max_batches=2)
    assert len(batches) == 2 and batches[0][0][1, 0] == 10  # non-overlapping, in order
