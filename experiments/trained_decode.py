"""`bench_decode.py --checkpoint CK`: decoding speed and held-out loss of a trained model at long
contexts, its own routing against the same weights on dense full attention.

Per context T (a held-out prompt of T bytes from the last 10 % of the run's corpus), two
decoders of the same network:

- routed: the guide routes every new token under the hard policy (the model's own routing);
- dense: every token of every layer full, no linear state: a plain K/V-cache decoder.

Each prefills its prompt (its own routing of it: later layers' keys depend on earlier layers'
routing), then both decode the next held-out bytes (teacher-forced), one step each in turn
(`interleaved_steps`, which the random-weight benchmark shares). Reported per variant: tokens/s, total and attention ms per
token, the decode steps' nats, and the held-out nats of the forward pass over `nats_windows`
windows of T bytes (all positions, and the last quarter of them) under the same routing.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import UsageError, load_text_run

from pyro_meta_attention.analysis.length_curve import windows
from pyro_meta_attention.decoding import Decoder, GuideRouter, MixRouter
from pyro_meta_attention.mechanisms.cost import cost_model_for
from pyro_meta_attention.policies import assign, parse_policy

VARIANTS = ("routed", "dense")
MB = 2**20


def interleaved_steps(
    decoders: dict[str, Decoder],
    tokens: torch.Tensor,
    warmup: int,
    logits: dict[str, list[torch.Tensor]] | None = None,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Feed tokens [N, B] to every decoder, one step each in turn (who goes first rotates);
    the first `warmup` rounds untimed. Returns per decoder the seconds of each timed step and
    of its attention part; the meters' FLOPs count the timed steps only. `logits`, if given,
    gets every step's logits [B, V] appended per decoder."""
    total = {name: [] for name in decoders}
    attention = {name: [] for name in decoders}
    for i in range(tokens.shape[0]):
        names = list(decoders)
        names = names[i % len(names) :] + names[: i % len(names)]
        for name in names:
            decoder = decoders[name]
            before = decoder.meter.attention_s
            t0 = time.perf_counter()
            out = decoder.step(tokens[i])
            elapsed = time.perf_counter() - t0
            if logits is not None:
                logits[name].append(out)
            if i == warmup - 1:
                decoder.meter.flops = dict.fromkeys(decoder.meter.flops, 0)
            if i >= warmup:
                total[name].append(elapsed)
                attention[name].append(decoder.meter.attention_s - before)
    return total, attention


def mean_ms(times: list[float]) -> float:
    return 1e3 * statistics.fmean(times)


@torch.no_grad()
def forward_nats(model, guide, data: torch.Tensor, cost: torch.Tensor) -> dict[str, torch.Tensor]:
    """data [N, T + 1] -> {variant: nats [N, T]}: hard routing by the guide, and all-full; one
    window at a time (memory at 16k)."""
    hard, L = parse_policy("hard"), len(model.net.blocks)
    out: dict[str, list[torch.Tensor]] = {v: [] for v in VARIANTS}
    for window in data.split(1):
        x, y = window[:, :-1], window[:, 1:]  # [1, T]
        mean = list(guide.posterior_mean(x).unbind(2))  # L x [1, T, M]
        full = torch.zeros_like(x)
        routes = {
            "routed": (mean, [assign(hard, a, cost) for a in mean]),
            "dense": ([F.one_hot(full, 3).to(mean[0])] * L, [full] * L),
        }
        for name, (alphas, assignments) in routes.items():
            logits = model.net(x, alphas, assignments)  # [1, T, V]
            nats = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")
            out[name].append(nats.double())
    return {name: torch.cat(parts) for name, parts in out.items()}


def bench_trained(
    checkpoint: str, contexts: list[int], steps: int, warmup: int, nats_windows: int
) -> list[dict]:
    config, model, guide, source = load_text_run(checkpoint, max(contexts) + warmup + steps)
    need = max(contexts) + warmup + steps + 1
    if source.val.numel() < need:
        raise UsageError(f"the held-out split has {source.val.numel()} bytes; {need} are needed")
    cost = cost_model_for(config.model).normalised()
    net, L = model.net, config.model.n_layer
    rows = []
    for T in contexts:
        prompt = source.val[None, :T].long()  # [1, T]
        tokens = source.val[T : T + warmup + steps].long()[:, None]  # [N, 1]
        targets = source.val[T + 1 : T + warmup + steps + 1].long()
        decoders = {
            "routed": Decoder(net, GuideRouter(guide, parse_policy("hard"), cost), capacity=need),
            "dense": Decoder(net, MixRouter((1.0, 0.0, 0.0), L), capacity=need),
        }
        prefill_s, step_nats = {}, {}
        for name, decoder in decoders.items():
            t0 = time.perf_counter()
            decoder.prefill(prompt)
            prefill_s[name] = time.perf_counter() - t0
        logits: dict[str, list[torch.Tensor]] = {name: [] for name in decoders}
        total, attention = interleaved_steps(decoders, tokens, warmup, logits)
        for name in decoders:
            got = torch.cat(logits[name])[warmup:]  # [steps, V]
            step_nats[name] = float(F.cross_entropy(got, targets[warmup:]))
        data = windows(source.val, T, nats_windows)
        nats = forward_nats(model, guide, data, cost)
        route = decoders["routed"].route.assignment[0, T:]  # [steps + warmup, L] of the steps
        for name, decoder in decoders.items():
            memory = decoder.state.nbytes()
            rows.append(
                {
                    "context": T,
                    "variant": name,
                    "tokens_per_s": 1 / statistics.fmean(total[name]),
                    "ms_total": mean_ms(total[name]),
                    "ms_attention": mean_ms(attention[name]),
                    "prefill_s": prefill_s[name],
                    "decode_nats": step_nats[name],
                    "nats": float(nats[name].mean()),
                    "nats_last_quarter": float(nats[name][:, 3 * T // 4 :].mean()),
                    "nats_windows": data.shape[0],
                    "kv_cache_mb": memory["kv_used"] / MB,
                    "linear_state_mb": memory["linear_state"] / MB,
                    "step_route_share": [float((route == m).double().mean()) for m in range(3)]
                    if name == "routed"
                    else [1.0, 0.0, 0.0],
                }
            )
        dense = rows[-1]
        for row in rows[-2:]:
            row["speedup"] = row["tokens_per_s"] / dense["tokens_per_s"]
            row["attention_wall_ratio"] = row["ms_attention"] / dense["ms_attention"]
    return rows


def plot_trained(rows: list[dict], path: Path, title: str) -> None:
    """Tokens/s and held-out nats against context, routed vs dense."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    colours = {"routed": "#9467bd", "dense": "#d62728"}
    for variant in VARIANTS:
        mine = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["context"])
        x = [r["context"] for r in mine]
        label = "routed (hard, the model's own)" if variant == "routed" else "dense (all full)"
        ax1.plot(x, [r["tokens_per_s"] for r in mine], "o-", color=colours[variant], label=label)
        ax2.plot(x, [r["nats"] for r in mine], "o-", color=colours[variant], label=label)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context (tokens)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    ax1.set_yscale("log")
    ax1.set_ylabel("decode tokens / s (B = 1)")
    ax2.set_ylabel("held-out nats per byte (forward, whole window)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
