"""Bits per byte: how byte-level language models are compared (enwik8, text8, WikiText).

The network reads and predicts bytes (vocabulary 256), so a token is one byte and

    bits per byte = nats per token / ln 2.

On a task that scores only some targets (MQAR's answers) it is bits per scored byte.
"""

from __future__ import annotations

import math


def bits_per_byte(nats_per_token: float | None) -> float | None:
    """Nats per byte-level token in bits per byte (None stays None: no finite loss)."""
    return None if nats_per_token is None else nats_per_token / math.log(2)
