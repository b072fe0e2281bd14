"""The data a run config names: a byte corpus or a generated task, behind one interface.

Both kinds give seeded training batches (`train_batch(B, generator)`), fixed held-out batches
(`val_batches(B, count)`), a `name`, a `sha256` and a `record()` for the run folder, and
`class_names` when positions carry known classes. `Batch.mask` marks the scored positions of a
task (None: every next byte is scored).
"""

from __future__ import annotations

import torch

from ..config import RunConfig
from .batches import Batch
from .corpus import Corpus, load_corpus
from .mqar import MQAR_TASK, MQARConfig, MQARTask
from .recall import RECALL_TASK

DataSource = Corpus | MQARTask
SYNTHETIC = (MQAR_TASK, RECALL_TASK)  # the built-in tasks a data path may name


def data_for(config: RunConfig, path: str | None = None) -> DataSource:
    """The data a run config names (or `path` instead): `synthetic:mqar` at the model's block
    size and local window, else a corpus at its block size, cap and split."""
    d, m = config.data, config.model
    path = d.path if path is None else path
    if path == MQAR_TASK:
        return MQARTask(MQARConfig(seq_len=m.block_size, pairs=d.mqar_pairs, window=m.window))
    if path is not None and path.startswith("synthetic:") and path not in SYNTHETIC:
        raise ValueError(f"unknown synthetic task {path!r}: the tasks are {', '.join(SYNTHETIC)}")
    return load_corpus(path, m.block_size, d.max_bytes, d.val_fraction)


def held_out_batches(
    source: DataSource,
    config: RunConfig,
    batches: int | None = None,
    device: str | torch.device | None = None,
) -> list[Batch]:
    """The held-out batches at a run config's batch size, on `device` (default: the config's),
    `batches` of them (default: `TrainConfig.val_batches`)."""
    tc = config.train
    count = tc.val_batches if batches is None else batches
    device = tc.device if device is None else device
    return [b.to(device) for b in source.val_batches(tc.batch_size, count)]
