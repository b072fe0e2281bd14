"""Decode latency of hard-routed generation against dense attention with a KV cache.

    python experiments/bench_decode.py --json experiments/results/bench_decode.json \
        --plot experiments/results/bench_decode.png          # 1k, 4k, 16k; B = 1 and 8
    python experiments/bench_decode.py --context 4096 --batch 1 --mix 25/50/25 --steps 16
    python experiments/bench_decode.py --smoke                      # tiny, for tests
    python experiments/bench_decode.py --checkpoint runs/default/checkpoint.pt \
        --json trained.json --plot trained.png      # a trained model: routed vs dense, and nats
    python experiments/bench_decode.py --smoke --checkpoint smoke   # trains a tiny model first

With --checkpoint, a trained model decodes held-out text at each --context with its own hard
routing and, side by side, with every token on full attention and a dense K/V cache; the rows
add the held-out nats of both at that length (experiments/trained_decode.py). Without it:

a random-weight model (L = 2, C = 512, H = 8, D = 64, w = 128, chunk 64, float32, rotary
positions; the table in docs/benchmarks.md was measured with learned positions, before issue 18)
prefills a random prompt of --context bytes per sequence, once per (context, B); every variant continues from a copy of that state
(the prompt's routing changes nothing a step reads: every key is cached and the running state
takes every key). Then --steps tokens are decoded, every variant one step in turn (timed
interleaved, after --warmup untimed rounds):

- dense: every token full, the decoder's own code path with a routing of 100/0/0 and no linear
  state (a KV-cache decoder);
- each --mix FULL/LINEAR/LOCAL %: every token of every layer routed hard and independently with
  those shares (seeded); learned:RUN takes a trained run's argmax shares (its summary.json).

Per variant, the means over steps of the time per step (total: embedding, projections, MLPs,
head, routing) and of its attention part (means, not medians: a routed step's cost depends on
how many of its rows and layers drew full, and the mean is what a long generation pays) (state update and the mechanisms' reads, all layers),
tokens/s = B / total, the attention FLOPs counted per token (`decoding/flops.py`), and the
state's memory. Ratios are over dense in the same run: attention wall, total wall, counted
FLOPs, and efficiency = counted ratio / attention wall ratio (1.0: every counted saving shows
on the clock). CPU, one thread by default (--threads 0: torch's default).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from bench_hard_routing import parse_mix
from common import ArgumentParser, UsageError, main_guard, smoke_checkpoint
from trained_decode import bench_trained, interleaved_steps, mean_ms, plot_trained

from pyro_meta_attention.config import ModelConfig
from pyro_meta_attention.decoding import Decoder, MixRouter
from pyro_meta_attention.decoding.attend import LINEAR
from pyro_meta_attention.network import RoutedTransformer
from pyro_meta_attention.training.run_dir import write_text

DEFAULT_MIXES = ("25/50/25", "10/45/45", "0/50/50", "learned:experiments/results/default-none")
LAYERS, C, H, WINDOW, CHUNK = 2, 512, 8, 128, 64
MB = 2**20


def bench_context(
    T: int, B: int, mixes: list[str], steps: int, warmup: int, seed: int
) -> list[dict]:
    """Rows for one (context T, batch B): dense first, then each mix."""
    config = ModelConfig(
        block_size=T + warmup + steps,
        n_layer=LAYERS,
        n_head=H,
        n_embd=C,
        window=WINDOW,
        chunk=CHUNK,
    )
    torch.manual_seed(seed)
    net = RoutedTransformer(config).eval()
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, 256, (B, T), generator=gen)
    filler = Decoder(net, MixRouter((0.0, 0.0, 1.0), LAYERS), keep_linear=True)
    t0 = time.perf_counter()
    filler.prefill(prompt)  # all local: the cheapest way to fill the cache and running state
    prefill_s = time.perf_counter() - t0
    variants = {"dense": (1.0, 0.0, 0.0)} | {mix: parse_mix(mix) for mix in mixes}
    decoders = {}
    for i, (name, shares) in enumerate(variants.items()):
        decoder = Decoder(net, MixRouter(shares, LAYERS, seed=seed + 1 + i))
        decoder.start_from(filler.state.clone(linear=bool(shares[LINEAR])))
        decoders[name] = decoder
    del filler
    tokens = torch.randint(0, 256, (warmup + steps, B), generator=gen)
    total, attention = interleaved_steps(decoders, tokens, warmup)
    dense_flops = sum(decoders["dense"].meter.flops.values())
    rows = []
    for name, decoder in decoders.items():
        flops = decoder.meter.flops
        memory = decoder.state.nbytes()
        row = {
            "context": T,
            "B": B,
            "variant": name,
            "shares": list(variants[name]),
            "ms_total": mean_ms(total[name]),
            "ms_attention": mean_ms(attention[name]),
            "tokens_per_s": B / statistics.fmean(total[name]),
            "attention_flops_per_token": sum(flops.values()) / (steps * B),
            "flops_per_part": {k: v / (steps * B) for k, v in flops.items()},
            "kv_cache_mb": memory["kv_used"] / MB,
            "linear_state_mb": memory["linear_state"] / MB,
            "prefill_s": prefill_s,
        }
        rows.append(row)
    dense = rows[0]
    for row in rows:
        row["counted_ratio"] = row["attention_flops_per_token"] * steps * B / dense_flops
        row["attention_wall_ratio"] = row["ms_attention"] / dense["ms_attention"]
        row["total_wall_ratio"] = row["ms_total"] / dense["ms_total"]
        row["efficiency"] = row["counted_ratio"] / row["attention_wall_ratio"]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(__doc__)
    p.add_argument("--context", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="sequences B")
    p.add_argument("--mix", nargs="+", default=list(DEFAULT_MIXES), help="FULL/LINEAR/LOCAL %%")
    p.add_argument("--steps", type=int, default=32, help="timed decode steps per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    p.add_argument("--json", default=None, help="write the rows here")
    p.add_argument("--plot", default=None, help="write a PNG here")
    p.add_argument("--checkpoint", default=None, help="a trained model instead of random weights")
    p.add_argument("--nats-windows", type=int, default=2, help="held-out windows per context")
    p.add_flags("seed", "smoke")
    a = p.parse_args(argv)
    for mix in a.mix:
        try:
            parse_mix(mix)
        except argparse.ArgumentTypeError as err:
            raise UsageError(f"--mix {mix}: {err}") from None
    for flag, values, least in (
        ("--context", a.context, 1),
        ("--batch", a.batch, 1),
        ("--steps", [a.steps], 1),
        ("--warmup", [a.warmup], 1),
        ("--threads", [a.threads], 0),
        ("--nats-windows", [a.nats_windows], 1),
    ):
        if min(values) < least:
            raise UsageError(f"{flag} must be >= {least}, got {min(values)}")
    for path in (a.json, a.plot):
        if path is not None and not Path(path).parent.is_dir():
            raise UsageError(f"{Path(path).parent} is not a folder")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.checkpoint is not None:
        return main_trained(a, argv)
    contexts, batches, steps = a.context, a.batch, a.steps
    if a.smoke:
        contexts, batches, steps = [min(a.context + [200])], [1, 2], 3
    print(
        f"CPU, float32, L={LAYERS} C={C} H={H} D={C // H} window={WINDOW}, "
        f"{torch.get_num_threads()} thread(s), {steps} timed steps; ratios over dense"
    )
    print(
        f"{'context':>7} {'B':>2} {'variant':>22} {'attn ms':>8} {'total ms':>8} {'tok/s':>7} "
        f"{'counted':>7} {'attn':>6} {'total':>6} {'eff':>5} {'KV MB':>7} {'lin MB':>6}"
    )
    rows = []
    for B in batches:
        for T in contexts:
            for row in bench_context(T, B, a.mix, steps, a.warmup, a.seed):
                row |= {
                    "threads": torch.get_num_threads(),
                    "steps": steps,
                    "torch": torch.__version__,
                }
                rows.append(row)
                print(
                    f"{T:>7} {B:>2} {row['variant'][-22:]:>22} {row['ms_attention']:8.2f} "
                    f"{row['ms_total']:8.2f} {row['tokens_per_s']:7.1f} "
                    f"{row['counted_ratio']:7.3f} {row['attention_wall_ratio']:6.3f} "
                    f"{row['total_wall_ratio']:6.3f} {row['efficiency']:5.2f} "
                    f"{row['kv_cache_mb']:7.1f} {row['linear_state_mb']:6.2f}",
                    flush=True,
                )
    if a.json:
        write_text(Path(a.json), json.dumps(rows, indent=2) + "\n")
    if a.plot:
        plot(rows, Path(a.plot))
    return 0


def main_trained(a: argparse.Namespace, argv: list[str] | None) -> int:
    """--checkpoint: the trained model's routing against dense decoding of the same weights."""
    checkpoint, contexts, steps, windows = a.checkpoint, a.context, a.steps, a.nats_windows
    if a.smoke:
        if checkpoint == "smoke":
            checkpoint = str(smoke_checkpoint(a.seed))
        contexts, steps, windows = [64, 128], 3, 1
    print(f"CPU, {torch.get_num_threads()} thread(s), B = 1, {steps} timed steps, {checkpoint}")
    print(
        f"{'context':>7} {'variant':>7} {'tok/s':>7} {'speedup':>7} {'attn ms':>8} "
        f"{'total ms':>8} {'attn':>6} {'nats':>6} {'last 1/4':>8} {'step nats':>9} {'KV MB':>7}"
    )
    rows = bench_trained(checkpoint, contexts, steps, a.warmup, windows)
    for row in rows:
        row |= {"threads": torch.get_num_threads(), "steps": steps, "torch": torch.__version__}
        print(
            f"{row['context']:>7} {row['variant']:>7} {row['tokens_per_s']:7.1f} "
            f"{row['speedup']:7.2f} {row['ms_attention']:8.2f} {row['ms_total']:8.2f} "
            f"{row['attention_wall_ratio']:6.3f} {row['nats']:6.3f} "
            f"{row['nats_last_quarter']:8.3f} {row['decode_nats']:9.3f} {row['kv_cache_mb']:7.1f}"
        )
    if a.json:
        command = "python experiments/bench_decode.py " + " ".join(argv or sys.argv[1:])
        record = {"command": command, "checkpoint": checkpoint, "rows": rows}
        write_text(Path(a.json), json.dumps(record, indent=2) + "\n")
    if a.plot:
        title = f"Decoding {checkpoint}: own hard routing vs dense (CPU, B = 1)"
        plot_trained(rows, Path(a.plot), title)
    return 0


def plot(rows: list[dict], path: Path) -> None:
    """Attention ms per token against context, one line per variant, one panel per B."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["B"] for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches), 4), squeeze=False)
    for ax, B in zip(axes[0], batches, strict=True):
        mine = [r for r in rows if r["B"] == B]
        for variant in dict.fromkeys(r["variant"] for r in mine):
            line = sorted(
                (r["context"], r["ms_attention"]) for r in mine if r["variant"] == variant
            )
            label = (
                "learned (" + Path(variant.removeprefix("learned:")).name + ")"
                if variant.startswith("learned:")
                else variant
            )
            ax.plot(*zip(*line, strict=True), "o-", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context (tokens before the step)")
        ax.set_ylabel("attention ms per decode step (all layers)")
        ax.set_title(f"B = {B}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    r0 = rows[0]
    fig.suptitle(f"Hard-routed decoding vs dense KV cache (CPU, {r0['threads']} thread(s))")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main_guard(main))
