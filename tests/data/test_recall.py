import torch

from pyro_meta_attention.data.batches import val_window_classes, val_windows
from pyro_meta_attention.data.corpus import load_corpus
from pyro_meta_attention.data.recall import FILLER, RECALL, RECALL_TASK, recall_corpus


def test_recall_corpus_is_seeded_and_answers_are_recallable():
    data, classes = recall_corpus(5000, seed=3)
    assert (data, classes.tolist()) == (recall_corpus(5000, seed=3)[0], classes.tolist())
    assert len(data) == classes.numel() == 5000
    text = data.decode()
    pairs = {}
    for t, cls in enumerate(classes.tolist()):
        if text[t] == "=" and t + 1 < len(text):
            pairs[text[t - 1]] = (text[t + 1], t + 1)  # the latest value of each key
        if cls == RECALL and t + 1 < len(text):
            assert text[t] == ">" and text[t - 2] == "?"
            value, written = pairs[text[t - 1]]
            assert text[t + 1] == value  # the answer was written earlier ...
            assert t - written > 24  # ... beyond a local window of 16 or 24 bytes
    assert (classes == RECALL).sum() > 50 and (classes == FILLER).sum() > 1000


def test_filler_is_locally_predictable():
    data, classes = recall_corpus(3000, seed=0)
    for t in torch.nonzero(classes == FILLER).flatten().tolist():
        if t + 1 < len(data) and t >= 10 and (classes[t - 10 : t] == FILLER).all():
            # the next byte already appeared within the last 5 bytes (motif length <= 5)
            assert data[t + 1] in data[t - 4 : t + 1]


def test_corpus_loader_carries_classes_aligned_with_windows():
    corpus = load_corpus(RECALL_TASK, block_size=32, max_bytes=20_000)
    assert corpus.val_classes is not None and corpus.val_classes.numel() == corpus.val.numel()
    batches = val_windows(corpus.val, 4, 32, 2)
    classes = val_window_classes(corpus.val_classes, 4, 32, 2)
    assert [c.shape for c in classes] == [x.shape for x, _ in batches]
    for (x, y), c in zip(batches, classes, strict=True):
        recall = c == RECALL
        assert (x[recall] == ord(">")).all()
        assert ((y[recall] >= ord("0")) & (y[recall] <= ord("9"))).all()
