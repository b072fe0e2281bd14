"""Fast attention cores against their float64 naive references, plus causality and edge cases."""

import pytest
import torch

from pyro_meta_attention.mechanisms import (
    MECHANISMS,
    full_attention,
    linear_attention,
    local_attention,
    run_mechanism,
)
from pyro_meta_attention.mechanisms.naive import (
    full_attention_ref,
    linear_attention_ref,
    local_attention_ref,
)

B, H, D = 2, 3, 8
LENGTHS = (1, 63, 100, 257)
BLOCKS = ((16, 16), (32, 64))  # (window, chunk): T is below, above and not a multiple of each


def qkv(T: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    return [torch.randn(B, H, T, D, dtype=dtype, requires_grad=True) for _ in range(3)]


def reference(name: str, q, k, v, window: int) -> torch.Tensor:
    if name == "full":
        return full_attention_ref(q, k, v)
    if name == "linear":
        return linear_attention_ref(q, k, v)
    return local_attention_ref(q, k, v, window)


def out_and_grads(fn, q, k, v, grad_out: torch.Tensor) -> list[torch.Tensor]:
    out = fn(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), grad_out.to(out.dtype))
    return [out.detach().double(), *(g.double() for g in grads)]


def fast_and_naive(name, q, k, v, grad_out, window, chunk):
    """(out, dq, dk, dv) of the fast mechanism and of its naive twin, both in float64."""

    def fast(q, k, v):
        return run_mechanism(name, q, k, v, window=window, chunk=chunk)

    def naive(q, k, v):
        return reference(name, q, k, v, window)

    return out_and_grads(fast, q, k, v, grad_out), out_and_grads(naive, q, k, v, grad_out)


@pytest.mark.parametrize("window,chunk", BLOCKS)
@pytest.mark.parametrize("T", LENGTHS)
@pytest.mark.parametrize("name", MECHANISMS)
def test_matches_reference_float64(name: str, T: int, window: int, chunk: int) -> None:
    # Both sides run in float64 and differ only in summation order (blocked/chunked vs T x T),
    # so they agree to a few ulps of values of order 1; 1e-10 leaves ample room yet would
    # catch any masking, padding or prefix-sum error, which shows up at order 1e-2 or more.
    q, k, v = qkv(T)
    torch.manual_seed(1)
    grad_out = torch.randn(B, H, T, D, dtype=torch.float64)
    got, want = fast_and_naive(name, q, k, v, grad_out, window, chunk)
    for label, g, w in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10, msg=f"{name} {label}")


@pytest.mark.parametrize("name", MECHANISMS)
def test_float32_close_to_reference(name: str) -> None:
    # float32 has ~1.2e-7 relative precision; sums over up to 257 keys (and, for linear, a
    # ratio of two such sums) and the backward's sums over queries accumulate rounding to
    # about 2e-6 here on outputs and gradients of order 1-10. 5e-5 leaves headroom for other
    # BLAS summation orders and still rejects any structural mistake (errors of order 1e-2).
    T, window, chunk = 257, 32, 64
    q, k, v = qkv(T, dtype=torch.float32)
    torch.manual_seed(1)
    grad_out = torch.randn(B, H, T, D)
    got, want = fast_and_naive(name, q, k, v, grad_out, window, chunk)
    assert got[0].dtype == torch.float64  # cast by out_and_grads; the fast op ran in float32
    for label, g, w in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=5e-5, atol=5e-5, msg=f"{name} {label}")


@pytest.mark.parametrize("name", MECHANISMS)
def test_causal(name: str) -> None:
    T = 100
    q, k, v = (x.detach() for x in qkv(T))
    base = run_mechanism(name, q, k, v, window=16, chunk=16)
    for t in (0, 15, 16, 50, T - 1):
        perturbed = []
        for x in (q, k, v):
            y = x.clone()
            y[:, :, t + 1 :] += torch.randn_like(y[:, :, t + 1 :])
            perturbed.append(y)
        out = run_mechanism(name, *perturbed, window=16, chunk=16)
        torch.testing.assert_close(out[:, :, : t + 1], base[:, :, : t + 1], rtol=0, atol=1e-12)
        if t < T - 1:
            assert not torch.allclose(out[:, :, t + 1 :], base[:, :, t + 1 :])


@pytest.mark.parametrize("T", (1, 63, 100))
def test_local_wide_window_is_full(T: int) -> None:
    q, k, v = (x.detach() for x in qkv(T))
    full = full_attention(q, k, v)
    for window in (T, T + 1, 10 * T):
        torch.testing.assert_close(local_attention(q, k, v, window), full, rtol=1e-12, atol=1e-12)


def test_local_window_one_returns_v() -> None:
    q, k, v = (x.detach() for x in qkv(100))
    torch.testing.assert_close(local_attention(q, k, v, 1), v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
@pytest.mark.parametrize("name", MECHANISMS)
def test_shape_dtype_device_preserved(name: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    # Non-contiguous inputs, as produced by splitting heads from a [B, T, H, D] projection.
    q, k, v = (torch.randn(B, 37, H, D, dtype=dtype).transpose(1, 2) for _ in range(3))
    out = run_mechanism(name, q, k, v, window=8, chunk=8)
    assert out.shape == (B, H, 37, D)
    assert out.dtype == dtype
    assert out.device == q.device
    assert torch.isfinite(out).all()


def test_bad_inputs_raise() -> None:
    torch.manual_seed(0)
    q = torch.randn(B, H, 10, D)
    with pytest.raises(ValueError, match="window must be an int >= 1"):
        local_attention(q, q, q, 0)
    with pytest.raises(ValueError, match="chunk must be an int >= 1"):
        linear_attention(q, q, q, 0)
    with pytest.raises(ValueError, match="chunk must be an int >= 1"):
        linear_attention(q, q, q, 2.5)  # type: ignore[arg-type]
    for name in MECHANISMS:
        with pytest.raises(ValueError, match="same shape"):
            run_mechanism(name, q, q, q[:, :, :5], window=4, chunk=4)
        with pytest.raises(ValueError, match="4-D"):
            run_mechanism(name, q[0], q[0], q[0], window=4, chunk=4)
        with pytest.raises(ValueError, match="dtype"):
            run_mechanism(name, q, q, q.double(), window=4, chunk=4)
    with pytest.raises(ValueError, match="valid names are"):
        run_mechanism("sparse", q, q, q, window=4, chunk=4)


def test_mechanism_order_and_dispatch() -> None:
    assert MECHANISMS == ("full", "linear", "local")
    q, k, v = (x.detach() for x in qkv(20))
    direct = (full_attention(q, k, v), linear_attention(q, k, v, 8), local_attention(q, k, v, 4))
    for name, want in zip(MECHANISMS, direct, strict=True):
        assert torch.equal(run_mechanism(name, q, k, v, window=4, chunk=8), want)
