"""Prefill + incremental decoding against the forward pass of the whole sequence, and the limits
of the positional table."""

from dataclasses import replace

import pytest
import torch
from routed_models import POLICIES, POSITIONS, PRIORS, decode, make_decoder, routed_model, tokens

from pyro_meta_attention.decoding import Decoder, MixRouter, PositionLimitError, generate

# Both sides run in float64 and differ only in summation order (the linear state summed token
# by token vs chunk by chunk, one query's softmax vs a blocked kernel's), so logits of order 1
# agree to a few ulps (2e-16 measured); 1e-12 leaves room, and a wrong key, window edge,
# position or state shows up at 1e-3 or more.
TOL = 1e-12


def forward_logits(model, decoder: Decoder, x: torch.Tensor) -> torch.Tensor:
    """The forward pass of x [B, T] under the routing the decoder used."""
    route = decoder.route
    return model.net(x, list(route.alpha.unbind(2)), list(route.assignment.unbind(2)))


@pytest.mark.parametrize("positions,rope_linear", POSITIONS)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("prior", PRIORS)
def test_decoding_equals_the_forward_pass(prior, policy, positions, rope_linear):
    """B = 3, prompt 5, then 24 steps to T = 29: crosses the window and chunk (8) at 8, 16, 24."""
    config, model, guide = routed_model(prior, positions=positions, rope_linear=rope_linear)
    decoder = make_decoder(config, model, guide, policy)
    x = tokens(3, 29)
    got = decode(decoder, x, prompt=5)
    assert got.shape == (3, 29, 256) and got.dtype == torch.float64
    torch.testing.assert_close(got, forward_logits(model, decoder, x), rtol=0, atol=TOL)


@pytest.mark.parametrize(
    "B,prompt,T,token_shift",
    [(1, 1, 17, True), (2, 7, 9, False), (1, 8, 32, True), (4, 13, 31, False), (2, 32, 32, True)],
)
def test_decoding_equals_the_forward_pass_at_odd_lengths(B, prompt, T, token_shift):
    """A one-token prompt, prompts ending before and on a window/chunk edge, the whole block."""
    config, model, guide = routed_model(token_shift=token_shift)
    decoder = make_decoder(config, model, guide, "threshold:0.5")
    x = tokens(B, T, seed=prompt)
    got = decode(decoder, x, prompt)
    torch.testing.assert_close(got, forward_logits(model, decoder, x), rtol=0, atol=TOL)


@pytest.mark.parametrize("shares", [(1.0, 0.0, 0.0), (0.25, 0.5, 0.25), (0.0, 0.5, 0.5)])
def test_fixed_mixes_decode_exactly(shares):
    config, model, _ = routed_model()
    decoder = Decoder(model.net, MixRouter(shares, config.model.n_layer, seed=1))
    x = tokens(3, 26)
    got = decode(decoder, x, prompt=3)
    torch.testing.assert_close(got, forward_logits(model, decoder, x), rtol=0, atol=TOL)
    assert (decoder.state.layers[0].state is None) == (shares[1] == 0)  # linear state iff used


def test_the_state_after_prefill_equals_the_state_after_steps():
    """Prefilling 20 tokens or prefilling 3 and stepping 17 leaves the same cache and linear
    state (summation order only); all-linear routing, the same whichever way it is drawn."""
    config, model, _ = routed_model()
    x = tokens(2, 20)
    states = []
    for prompt in (20, 3):
        decoder = Decoder(model.net, MixRouter((0.0, 1.0, 0.0), 2))
        decode(decoder, x, prompt)
        states.append(decoder.state)
    for a, b in zip(states[0].layers, states[1].layers, strict=True):
        assert a.length == b.length == 20
        torch.testing.assert_close(a.keys, b.keys, rtol=0, atol=TOL)
        torch.testing.assert_close(a.state, b.state, rtol=0, atol=TOL)
        torch.testing.assert_close(a.norm, b.norm, rtol=0, atol=TOL)


@pytest.mark.parametrize("rope_linear", [False, True])
@pytest.mark.parametrize("policy", ["soft", "threshold:0.5"])
def test_rotary_decoding_goes_past_the_training_length(policy, rope_linear):
    """block_size 32: prompt 5, then 95 steps to T = 100, the state growing from 32 rows (at 32
    and 64); equal to the forward pass of all 100 tokens, which rotary positions allow."""
    config, model, guide = routed_model(rope_linear=rope_linear)
    decoder = make_decoder(config, model, guide, policy)
    x = tokens(2, 100)
    got = decode(decoder, x, prompt=5)
    torch.testing.assert_close(got, forward_logits(model, decoder, x), rtol=0, atol=TOL)
    assert decoder.state.layers[0].capacity == 128 and decoder.state.tokens.shape == (2, 128)


def test_max_context_turns_full_attention_into_a_window_and_leaves_the_rest():
    """With max_context N an all-full decoder is the forward pass of the same weights with a
    local window of N for every token; local (w = 8 <= N) and linear tokens are unchanged."""
    config, model, _ = routed_model(token_shift=False)
    N, x = 12, tokens(2, 70)
    decoder = Decoder(model.net, MixRouter((1.0, 0.0, 0.0), 2), max_context=N)
    got = decode(decoder, x, prompt=N)
    windowed = type(model.net)(replace(config.model, window=N)).double()
    windowed.load_state_dict(model.net.state_dict())
    local = [torch.full((2, 70), 2)] * 2
    want = windowed(x, [torch.nn.functional.one_hot(a, 3).double() for a in local], local)
    torch.testing.assert_close(got, want, rtol=0, atol=TOL)
    assert decoder.state.layers[0].capacity == 2 * N  # one buffer of 2N rows, never grown
    mixes = [
        Decoder(model.net, MixRouter((0.0, 0.5, 0.5), 2, seed=4), max_context=c) for c in (N, None)
    ]
    bounded, unbounded = (decode(d, x, prompt=4) for d in mixes)
    torch.testing.assert_close(bounded, unbounded, rtol=0, atol=TOL)
    with pytest.raises(ValueError, match="longer than max_context 12"):
        decoder.prefill(tokens(1, 13))
    with pytest.raises(ValueError, match="local window 8"):
        Decoder(model.net, MixRouter((1.0, 0.0, 0.0), 2), max_context=7)
    _, learned, _ = routed_model(positions="learned")
    with pytest.raises(ValueError, match="rotary"):
        Decoder(learned.net, MixRouter((1.0, 0.0, 0.0), 2), max_context=16)


def test_a_step_beyond_block_size_is_a_clear_error_and_changes_nothing():
    """Learned positions (runs before rotary) end at block_size."""
    config, model, guide = routed_model(positions="learned")
    decoder = make_decoder(config, model, guide, "hard")
    x = tokens(1, 32)
    decode(decoder, x, prompt=30)
    keys = decoder.state.layers[0].keys.clone()
    with pytest.raises(PositionLimitError, match="block_size 32"):
        decoder.step(x[:, 0])
    assert decoder.length == 32 and torch.equal(decoder.state.layers[0].keys, keys)
    with pytest.raises(PositionLimitError, match="exceeds"):
        decoder.prefill(tokens(1, 33))


def test_generate_refuses_more_tokens_than_positions_before_any_work():
    config, model, guide = routed_model(positions="learned")
    decoder = make_decoder(config, model, guide, "hard")
    with pytest.raises(PositionLimitError, match="33 positions"):
        generate(decoder, tokens(1, 10), max_new_tokens=24)
    assert decoder.state is None
    out = generate(decoder, tokens(1, 10), max_new_tokens=23, temperature=0.0)
    assert out.shape == (1, 33) and decoder.length == 32  # the last token is drawn, not decoded


def test_generate_streams_tokens_and_is_seeded():
    config, model, guide = routed_model()
    streamed = []
    runs = []
    for _ in range(2):
        decoder = make_decoder(config, model, guide, "hard")
        g = torch.Generator().manual_seed(3)
        runs.append(generate(decoder, tokens(2, 4), 9, 1.0, 5, g, streamed.append))
    assert torch.equal(runs[0], runs[1]) and runs[0].shape == (2, 13)
    assert torch.equal(torch.stack(streamed[:9], 1), runs[0][:, 4:])
    greedy = generate(make_decoder(config, model, guide, "hard"), tokens(2, 4), 1, 0.0)
    logits = make_decoder(config, model, guide, "hard").prefill(tokens(2, 4))[:, -1]
    assert torch.equal(greedy[:, -1], logits.argmax(-1))


def test_a_decoder_continues_exactly_from_a_state_another_filled():
    """The benchmark's set-up: one all-local prefill that keeps the linear state, continued by
    a decoder with another routing; the steps' logits are the forward pass's under the joined
    routing."""
    config, model, guide = routed_model()
    x = tokens(2, 21)
    filler = Decoder(model.net, MixRouter((0.0, 0.0, 1.0), 2), keep_linear=True)
    filler.prefill(x[:, :6])
    decoder = Decoder(model.net, MixRouter((0.3, 0.4, 0.3), 2, seed=2))
    decoder.start_from(filler.state.clone())
    got = torch.stack([decoder.step(x[:, t]) for t in range(6, 21)], 1)
    prompt, steps = filler.route, decoder.route
    alpha = torch.cat([prompt.alpha, steps.alpha], 1)
    assignment = torch.cat([prompt.assignment, steps.assignment], 1)
    want = model.net(x, list(alpha.unbind(2)), list(assignment.unbind(2)))[:, 6:]
    torch.testing.assert_close(got, want, rtol=0, atol=TOL)
    with pytest.raises(ValueError, match="no linear state"):
        decoder.start_from(filler.state.clone(linear=False))
    with pytest.raises(ValueError, match="start with prefill"):
        make_decoder(config, model, guide, "budget:0.5").start_from(filler.state)
