"""A synthetic routing-validity task with a known answer: recall across local filler.

Each segment of the byte stream is

    q=7;                            a key=value pair (a lowercase key, a digit value)
    QRTQRTQRTQRTQRTQRTQRTQ⏎         filler: a random 2-5 letter motif repeated (24-64 bytes)
    ?q>7⏎                           the query: the value written before the filler

Predicting the byte after '>' needs the value written 24-70 bytes earlier, beyond a small local
window: only attention over the whole prefix (full) can do it exactly. Filler bytes are
predictable from the last few bytes: local attention suffices. A token's class is that of the
prediction made at its position (routing at t decides how x_{t+1} is predicted):

- recall (2): x_t is '>' and x_{t+1} is the recalled value;
- filler (1): x_t and x_{t+1} both lie inside a filler run;
- other (0): everything else (pairs, punctuation, query keys).

The default is one pair and one query per segment: with a key to match among two pairs, the
all-full model of the `cpu` Phase-1 budget (T = 128, 2 layers, 1,000 steps) stayed at chance
on recall tokens in a one-off pilot; with one pair it learns the recall in some seeds
(experiments/phase1/results/phase1-recall.md).
"""

from __future__ import annotations

import random

import torch

RECALL_TASK = "synthetic:recall"
CLASS_NAMES = ("other", "filler", "recall")
OTHER, FILLER, RECALL = range(3)


def recall_corpus(
    n_bytes: int,
    seed: int = 0,
    n_pairs: int = 1,
    filler: tuple[int, int] = (24, 64),
    n_queries: int = 1,
) -> tuple[bytes, torch.Tensor]:
    """(data, classes): n_bytes of the task and the class [n_bytes] uint8 of each position."""
    if not 1 <= n_queries <= n_pairs <= 26:
        raise ValueError(f"need 1 <= n_queries <= n_pairs <= 26, got {n_queries}, {n_pairs}")
    rng = random.Random(seed)
    out, classes = bytearray(), bytearray()

    def emit(text: str, cls: int) -> None:
        out.extend(text.encode())
        classes.extend([cls] * len(text))

    while len(out) < n_bytes:
        keys = rng.sample("abcdefghijklmnopqrstuvwxyz", n_pairs)
        values = {k: rng.choice("0123456789") for k in keys}
        emit("".join(f"{k}={values[k]};" for k in keys), OTHER)
        motif = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(2, 5)))
        run = (motif * 64)[: rng.randint(*filler)]
        emit(run[:-1], FILLER)  # the last filler byte predicts the newline: "other"
        emit(run[-1] + "\n", OTHER)
        for k in rng.sample(keys, n_queries):
            emit(f"?{k}", OTHER)
            emit(">", RECALL)
            emit(f"{values[k]}\n", OTHER)
    return bytes(out[:n_bytes]), torch.tensor(list(classes[:n_bytes]), dtype=torch.uint8)
