"""Incremental decoding with hard-routed attention: per-mechanism state, routing per token.

`state.py` (the K/V cache and the linear running state of each layer), `attend.py` (one new
token's attention, each mechanism for its own rows), `routing.py` (the guide's routing of each
new token under a policy, or fixed shares), `decoder.py` (prefill + steps), `flops.py` (what a
step counts), `sampling.py` (temperature / top-k sampling and the generation loop). Decisions:
README.md beside this file.
"""

from .decoder import DecodeMeter, Decoder, PositionLimitError
from .routing import GuideRouter, MixRouter, Route
from .sampling import generate, sample_next
from .state import DecodeState, LayerState

__all__ = [
    "DecodeMeter",
    "DecodeState",
    "Decoder",
    "GuideRouter",
    "LayerState",
    "MixRouter",
    "PositionLimitError",
    "Route",
    "generate",
    "sample_next",
]
