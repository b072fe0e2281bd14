"""Hard-routed attention against dense causal attention: counted FLOPs and wall clock.

    python experiments/bench_hard_routing.py                       # CPU, T = 1024 and 4096
    python experiments/bench_hard_routing.py --device cuda         # adds T = 16384, 32768
    python experiments/bench_hard_routing.py --mix 25/50/25 --T 4096 --json out.json
    python experiments/bench_hard_routing.py --smoke               # tiny, for tests

Each token is routed iid (seeded) to full / linear / local with the mix's percentages. For each
(T, mix): counted_cost_ratio = routed_flops / dense_full_flops (the FLOPs the routed kernels
execute over dense causal attention's T(T+1)/2 query-key pairs); wall_ratio = median time of
`routed_attention` / median time of dense causal `full_attention`, the two timed interleaved in
one loop (forward only, inference mode, after warm-up); efficiency = counted_cost_ratio /
wall_ratio, the share of the counted saving realised on the clock (1.0 = all of it). Each
mechanism's routed part is timed too (ms_full, ms_linear, ms_local), in a second loop.
--positions rope (the network's default) includes the rotation of queries and keys in both
timed calls, as the network runs them (the routed call's linear part reads them unrotated);
learned (runs before rotary positions) times the kernels alone. Give both to compare.

On CPU it runs one thread by default (--threads 0: torch's default): the machines this was
written on have 2 cores shared with other jobs. --malloc-top-pad-mb N asks glibc to keep N MB
of freed heap mapped: by default glibc hands the routed path's many short-lived buffers back to
the OS after each call and page-faults them in again on the next (a caching allocator such as
jemalloc or tcmalloc avoids this too).
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from common import ArgumentParser, main_guard

from pyro_meta_attention.analysis.timing import time_interleaved
from pyro_meta_attention.mechanisms import MECHANISMS, full_attention
from pyro_meta_attention.mechanisms.rotary import apply_rotary
from pyro_meta_attention.mechanisms.routed import (
    dense_full_flops,
    routed_attention,
    routed_flops,
    routed_mechanism,
)
from pyro_meta_attention.training.run_dir import write_text

DEFAULT_MIXES = ("100/0/0", "25/50/25", "10/45/45", "0/50/50")
H, D, WINDOW, CHUNK = 8, 64, 128, 64


def parse_mix(text: str) -> tuple[float, float, float]:
    """'25/50/25' -> full / linear / local shares summing to 1.

    'learned:PATH' takes the argmax routing shares of a trained run: PATH is its folder or its
    summary.json (`routing_share`, pooled over layers).
    """
    if text.startswith("learned:"):
        path = Path(text.removeprefix("learned:"))
        path = path / "summary.json" if path.is_dir() else path
        try:
            shares = json.loads(path.read_text())["routing_share"]
        except (OSError, ValueError, KeyError) as err:
            raise argparse.ArgumentTypeError(
                f"cannot read routing_share from {path}: {err}"
            ) from err
        return tuple(float(x) for x in shares)  # type: ignore[return-value]
    parts = text.split("/")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"mix must be FULL/LINEAR/LOCAL percentages, got {text!r}")
    try:
        shares = tuple(float(x) for x in parts)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"mix must be numbers, got {text!r}") from err
    if min(shares) < 0 or abs(sum(shares) - 100) > 1e-6:
        raise argparse.ArgumentTypeError(f"mix percentages must be >= 0 and sum to 100: {text!r}")
    return tuple(x / 100 for x in shares)  # type: ignore[return-value]


def random_assignment(shares: tuple[float, ...], B: int, T: int, seed: int) -> torch.Tensor:
    """iid routing [B, T] int64 with P(mechanism m) = shares[m], seeded."""
    gen = torch.Generator().manual_seed(seed)
    draws = torch.multinomial(torch.tensor(shares), B * T, replacement=True, generator=gen)
    return draws.view(B, T)


def bench_one(
    B: int,
    T: int,
    mix: str,
    device: torch.device,
    dtype: torch.dtype,
    repeats: int,
    positions: str = "rope",
) -> dict:
    shares = parse_mix(mix)
    gen = torch.Generator().manual_seed(T)
    q, k, v = (torch.randn(B, H, T, D, generator=gen).to(device, dtype) for _ in range(3))
    assignment = random_assignment(shares, B, T, seed=T + 1)
    flops = routed_flops(assignment, n_head=H, head_dim=D, window=WINDOW, chunk=CHUNK)
    dense_flops = dense_full_flops(B, T, H, D)
    assignment = assignment.to(device)

    if positions == "rope":
        dense = {"dense": lambda: full_attention(apply_rotary(q), apply_rotary(k), v)}
        routed = {
            "routed": lambda: routed_attention(
                apply_rotary(q),
                apply_rotary(k),
                v,
                assignment,
                window=WINDOW,
                chunk=CHUNK,
                linear_qk=(q, k),
            )  # fmt: skip
        }
    else:
        dense = {"dense": lambda: full_attention(q, k, v)}
        routed = {
            "routed": lambda: routed_attention(q, k, v, assignment, window=WINDOW, chunk=CHUNK)
        }
    parts: dict[str, Callable[[], object]] = {}
    for m, name in enumerate(MECHANISMS):
        member = assignment == m
        if bool(member.any()):
            parts[name] = lambda m=m, member=member: routed_mechanism(
                m, q, k, v, member, window=WINDOW, chunk=CHUNK
            )
    warmup = min(2, repeats)
    with torch.inference_mode():  # the ratio from a loop of the two alone, then the parts
        med = time_interleaved(dense | routed, repeats, warmup, device)
        med |= time_interleaved(parts, repeats, warmup, device) if parts else {}

    counted = flops["total"] / dense_flops
    wall = med["routed"] / med["dense"]
    row = {
        "device": device.type,
        "B": B,
        "T": T,
        "mix": mix,
        "positions": positions,
        "counted_cost_ratio": counted,
        "wall_ratio": wall,
        "efficiency": counted / wall,
        "ms_dense": 1e3 * med["dense"],
        "ms_routed": 1e3 * med["routed"],
    }
    for name in MECHANISMS:
        row[f"ms_{name}"] = 1e3 * med[name] if name in med else 0.0
        row[f"counted_{name}"] = flops[name] / dense_flops
    return row


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(__doc__)
    p.add_argument("--T", type=int, nargs="+", default=None, help="sequence lengths")
    p.add_argument("--mix", nargs="+", default=list(DEFAULT_MIXES), help="FULL/LINEAR/LOCAL %%")
    p.add_argument("--batch", type=int, default=1, help="sequences per call (B)")
    p.add_argument("--repeats", type=int, default=9, help="timed calls per variant")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    p.add_argument("--malloc-top-pad-mb", type=int, default=0, help="glibc M_TOP_PAD, MB")
    p.add_argument(
        "--positions", nargs="+", default=["rope"], choices=["rope", "learned"],
        help="rotate q, k in the timed calls (rope) or not (learned)",
    )  # fmt: skip
    p.add_flags("device", "smoke")
    p.add_argument("--json", default=None, help="write the rows here")
    p.add_argument("--plot", default=None, help="write a PNG of the table here")
    a = p.parse_args(argv)
    for mix in a.mix:
        try:
            parse_mix(mix)
        except argparse.ArgumentTypeError as err:
            p.error(f"--mix {mix}: {err}")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    if a.batch < 1:
        p.error(f"--batch must be >= 1, got {a.batch}")
    if a.repeats < 1:
        p.error(f"--repeats must be >= 1, got {a.repeats}")
    if a.T and min(a.T) < 1:
        p.error(f"--T must be >= 1, got {min(a.T)}")
    if a.threads < 0:
        p.error(f"--threads must be >= 0, got {a.threads}")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.malloc_top_pad_mb and not ctypes.CDLL("libc.so.6").mallopt(-2, a.malloc_top_pad_mb << 20):
        p.error("mallopt(M_TOP_PAD) failed")  # -2 is M_TOP_PAD in glibc's malloc.h
    lengths = a.T or ([1024, 4096, 16384, 32768] if a.device == "cuda" else [1024, 4096])
    repeats = a.repeats
    if a.smoke:
        lengths, repeats = [min(a.T or [300])], 1
    device = torch.device(a.device)
    dtype = torch.bfloat16 if a.device == "cuda" else torch.float32

    rows = []
    header = f"{'T':>6} {'pos':>7} {'mix':>9} {'counted':>8} {'wall':>6} {'eff':>5} {'dense ms':>9} {'routed ms':>9}"
    print(
        f"{device.type}, {dtype}, B={a.batch} H={H} D={D} window={WINDOW} chunk={CHUNK}, "
        f"{torch.get_num_threads()} threads, malloc top pad {a.malloc_top_pad_mb} MB"
    )
    print(header + "   full / linear / local ms")
    for T, positions, mix in itertools.product(lengths, a.positions, a.mix):
        row = bench_one(a.batch, T, mix, device, dtype, repeats, positions)
        row.update(dtype=str(dtype), threads=torch.get_num_threads(), repeats=repeats)
        row.update(malloc_top_pad_mb=a.malloc_top_pad_mb, torch=torch.__version__)
        rows.append(row)
        print(
            f"{T:>6} {positions:>7} {mix:>9} {row['counted_cost_ratio']:8.3f} "
            f"{row['wall_ratio']:6.3f} {row['efficiency']:5.2f} {row['ms_dense']:9.1f} "
            f"{row['ms_routed']:9.1f}   "
            f"{row['ms_full']:.1f} / {row['ms_linear']:.1f} / {row['ms_local']:.1f}",
            flush=True,
        )
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        write_text(Path(a.json), json.dumps(rows, indent=2) + "\n")
    if a.plot:
        plot(rows, Path(a.plot))
    return 0


def plot(rows: list[dict], path: Path) -> None:
    """Counted-cost and wall-clock ratios per (T, mix), efficiency written above each pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def mix_label(mix: str) -> str:
        if mix.startswith("learned:"):  # the run folder's name: learned:runs/default-none
            return "learned\n" + Path(mix.removeprefix("learned:")).name[-16:]
        return mix

    def batch(r: dict) -> str:
        return f" B={r['B']}" if r.get("B", 1) != 1 else ""

    def pos(r: dict) -> str:
        return f" {r['positions']}" if len({x.get("positions") for x in rows}) > 1 else ""

    labels = [f"T={r['T']}{batch(r)}{pos(r)}\n{mix_label(r['mix'])}" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4))
    ax.bar(
        [i - 0.2 for i in x], [r["counted_cost_ratio"] for r in rows], 0.4, label="counted FLOPs"
    )
    ax.bar([i + 0.2 for i in x], [r["wall_ratio"] for r in rows], 0.4, label="wall clock")
    for i, r in enumerate(rows):
        top = max(r["counted_cost_ratio"], r["wall_ratio"])
        ax.text(i, top + 0.03, f"eff {r['efficiency']:.2f}", ha="center", fontsize=8)
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_ylim(0, 1.12 * max(max(r["counted_cost_ratio"], r["wall_ratio"]) for r in rows) + 0.05)
    ax.set_xticks(list(x), labels, fontsize=7)
    ax.set_ylabel("hard-routed / dense causal full attention")
    r0 = rows[0]
    ax.set_title(
        f"Hard-routed attention vs dense ({r0['device']}, {r0['dtype']}, {r0['threads']} thread(s));"
        " mix = full/linear/local %"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main_guard(main))
