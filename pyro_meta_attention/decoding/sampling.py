"""Sampling the next token from logits, and the generation loop on top of a `Decoder`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .decoder import Decoder, PositionLimitError


def sample_next(
    logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> Tensor:
    """logits [B, V] -> next tokens [B] int64.

    temperature 0 takes the argmax; otherwise softmax(logits / temperature), restricted to the
    top_k most likely tokens when top_k is given.
    """
    if temperature < 0 or top_k is not None and top_k < 1:
        raise ValueError(f"need temperature >= 0 and top_k >= 1, got {temperature}, {top_k}")
    if temperature == 0:
        return logits.argmax(-1)
    scaled = logits.double() / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[:, -1:]  # [B, 1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(logits.device)


@torch.no_grad()
def generate(
    decoder: Decoder,
    prompt: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    on_token: Callable[[Tensor], None] | None = None,
) -> Tensor:
    """Prefill prompt [B, T] and sample max_new_tokens more: returns [B, T + max_new_tokens].

    on_token(tokens [B]) is called with every new token as soon as it is drawn (streaming).
    The last token is drawn from the logits of the step before it, so it is never decoded.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    last = prompt.shape[1] + max_new_tokens - 1  # the last position decoded
    if not decoder.config.rotary and last > decoder.config.block_size:
        raise PositionLimitError(
            f"a prompt of {prompt.shape[1]} tokens and {max_new_tokens} new ones need "
            f"{last} positions; this model has {decoder.config.block_size} (block_size: its "
            "learned positions end there)"
        )
    logits = decoder.prefill(prompt)[:, -1]  # [B, V]
    out = [prompt]
    for i in range(max_new_tokens):
        token = sample_next(logits, temperature, top_k, generator)
        out.append(token[:, None])
        if on_token is not None:
            on_token(token)
        if i + 1 < max_new_tokens:
            logits = decoder.step(token)
    return torch.cat(out, 1)
