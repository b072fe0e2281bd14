"""Generate text from a checkpoint with hard-routed incremental decoding, streamed as it comes.

    python experiments/generate.py --checkpoint runs/default/checkpoint.pt --prompt "def "
    python experiments/generate.py --checkpoint CK --prompt-file p.txt --max-new-tokens 64 \
        --policy threshold:0.5 --temperature 0.8 --top-k 20 --seed 1 --stats --stats-png s.png
    python experiments/generate.py --checkpoint CK --prompt "def " --max-new-tokens 5000 \
        --max-context 1024                                # the state keeps the last 1,024 keys
    python experiments/generate.py --smoke --stats          # trains a tiny model first

The prompt is prefilled in one pass, then each new byte is routed by the guide (its causal
window of bytes, under --policy) and decoded against the per-mechanism state
(pyro_meta_attention/decoding/). A model with rotary positions writes any number of bytes: the
state grows as it goes. --max-context N keeps only the last N keys and values: a token routed to
full attention then sees the last N positions instead of all (local and linear tokens see what
they saw before); the prompt must fit in N. A model with learned positions (a run before rotary
positions) decodes at most block_size positions. Ctrl-C stops generating: what was written stays
printed, and the exit code is 130.

--stats prints every token's route per layer in colour (full red, linear blue, local green,
soft grey; initials below for plain terminals), its epistemic uncertainty, and the decoding
state's memory; --stats-png writes the routes and uncertainty as a heat map.
"""

from __future__ import annotations

import codecs
import sys
import time
from pathlib import Path

import torch
from common import (
    ArgumentParser,
    UsageError,
    at_least,
    load_run,
    main_guard,
    output_file,
    read_input_file,
    smoke_checkpoint,
    visible,
)

from pyro_meta_attention.decoding import Decoder, GuideRouter, generate
from pyro_meta_attention.mechanisms import MECHANISMS
from pyro_meta_attention.mechanisms.cost import cost_model_for
from pyro_meta_attention.policies import parse_policy

NAMES = [*MECHANISMS, "soft"]  # assignment m, then -1
COLOURS = {"full": 41, "linear": 44, "local": 42, "soft": 100}  # ANSI backgrounds
INITIALS = {"full": "F", "linear": "L", "local": "W", "soft": "s"}
SMOKE_PROMPT = "import "
MAX_PROMPT_BYTES = 1 << 20  # a prompt file larger than 1 MiB is refused before reading
PLOT_TOKENS = 200  # --stats-png shows the first 200 generated tokens (one column each)


def read_prompt(a) -> bytes:
    given = (a.prompt is not None) + (a.prompt_file is not None)
    if given > 1 or (given == 0 and not a.smoke):
        raise UsageError("give exactly one of --prompt and --prompt-file")
    if a.prompt_file is not None:
        data = read_input_file(a.prompt_file, "--prompt-file", MAX_PROMPT_BYTES)
    else:  # argv bytes that are not UTF-8 came in as surrogates: give the bytes back as given
        data = (SMOKE_PROMPT if a.prompt is None else a.prompt).encode("utf-8", "surrogateescape")
    if not data:
        raise UsageError("the prompt is empty")
    return data


def route_names(assignment: torch.Tensor) -> list[list[str]]:
    """assignment [T, L] -> per layer the mechanism name of each token."""
    return [[NAMES[m] for m in row] for row in assignment.T.tolist()]


def print_stats(data: bytes, route, start: int) -> None:
    """Each layer's route of the generated tokens (from `start`), coloured, and its epistemic
    uncertainty; route: the decoder's Route, B = 1."""
    assignment, epistemic = route.assignment[0, start:], route.epistemic[0, start:]  # [T, L]
    chars = [visible(data[t : t + 1]) or "?" for t in range(start, start + len(assignment))]
    print("\nroute per token (full red, linear blue, local green, soft grey):")
    for layer, names in enumerate(route_names(assignment)):
        coloured = "".join(
            f"\x1b[{COLOURS[n]}m{c}\x1b[0m" for n, c in zip(names, chars, strict=True)
        )
        print(f"layer {layer}: {coloured}")
        print(f"         {''.join(INITIALS[n] for n in names)}")
        share = {n: names.count(n) / len(names) for n in NAMES}
        shares = ", ".join(f"{n} {100 * s:.0f}%" for n, s in share.items() if s)
        e = epistemic[:, layer]
        print(f"         {shares}; epistemic mean {float(e.mean()):.4f}, max {float(e.max()):.4f}")


def print_memory(decoder: Decoder) -> None:
    """What the decoding state holds at the end, all layers."""
    mb = {k: v / 2**20 for k, v in decoder.state.nbytes().items()}
    kept = decoder.state.layers[0].stored
    if decoder.max_context is not None:
        kept = min(kept, decoder.max_context)
    bound = "all" if decoder.max_context is None else f"max_context {decoder.max_context}"
    print(
        f"\ndecoding state after {decoder.length} positions: K/V cache {mb['kv_used']:.2f} MB "
        f"used of {mb['kv_cache']:.2f} MB allocated ({kept} positions kept, {bound}); linear "
        f"state {mb['linear_state']:.3f} MB"
    )


def plot_stats(data: bytes, route, start: int, path: Path) -> None:
    """Heat maps of the first PLOT_TOKENS generated tokens: route per layer (categorical) and
    epistemic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    assignment = route.assignment[0, start : start + PLOT_TOKENS].T.cpu()  # [L, T]
    epistemic = route.epistemic[0, start : start + PLOT_TOKENS].T.cpu()
    L, T = assignment.shape
    size = (max(6, 0.18 * T + 2), 1.2 + 0.9 * L)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=size, layout="constrained")
    palette = ListedColormap(["#bbbbbb", "#d62728", "#1f77b4", "#2ca02c"])  # soft, mechs
    ax1.imshow(assignment + 1, cmap=palette, vmin=0, vmax=3, aspect="auto")
    shown_of = f"the first {T} of {len(route.assignment[0]) - start} generated tokens"
    ax1.set_title(f"route (grey soft, red full, blue linear, green local), {shown_of}", fontsize=9)
    shown = ax2.imshow(epistemic, cmap="viridis", aspect="auto")
    fig.colorbar(shown, ax=[ax1, ax2], label="epistemic (nats)", shrink=0.6)
    labels = [visible(data[t : t + 1]) for t in range(start, start + T)]
    for ax in (ax1, ax2):
        ax.set_yticks(range(L), [f"layer {i}" for i in range(L)], fontsize=8)
        ax.set_xticks(range(T), labels, fontsize=7)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(__doc__)
    p.add_argument("--checkpoint", default=None, help="checkpoint.pt (required unless --smoke)")
    p.add_argument("--prompt", default=None, help="prompt text (UTF-8)")
    p.add_argument("--prompt-file", default=None, help="prompt bytes from a file")
    p.add_argument("--max-new-tokens", type=int, default=64, help="bytes to generate")
    p.add_argument("--policy", default="hard", help="soft, hard, threshold:X or budget:Y")
    p.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest")
    p.add_argument("--max-context", type=int, default=None, help="keep the last N keys only")
    p.add_argument("--stats", action="store_true", help="route and uncertainty per token")
    p.add_argument("--stats-png", default=None, help="write the route heat map here")
    p.add_flags("seed", "device", "smoke")
    a = p.parse_args(argv)
    policy = parse_policy(a.policy)
    if a.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {a.max_new_tokens}")
    if not a.temperature >= 0 or a.temperature == float("inf"):
        raise UsageError(f"--temperature must be finite and >= 0, got {a.temperature}")
    if a.top_k is not None and a.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {a.top_k}")
    at_least(a.max_context, 1, "--max-context")
    if a.checkpoint is None and not a.smoke:
        raise UsageError("--checkpoint is required (or --smoke)")
    png = None if a.stats_png is None else output_file(a.stats_png, "--stats-png", ".png")
    prompt_bytes = read_prompt(a)
    checkpoint = smoke_checkpoint(a.seed) if a.smoke else a.checkpoint
    config, model, guide, _ = load_run(checkpoint, device=a.device, need_data=False)
    cost = cost_model_for(config.model).normalised()
    decoder = Decoder(model.net, GuideRouter(guide, policy, cost), max_context=a.max_context)
    prompt = torch.tensor([list(prompt_bytes)], dtype=torch.int64, device=a.device)  # [1, T]
    generator = torch.Generator().manual_seed(a.seed)

    text = codecs.getincrementaldecoder("utf-8")(errors="replace")
    shown = []  # the prompt is printed with the first new byte, once generation has started

    def stream(token: torch.Tensor) -> None:
        new = bytes([int(token[0])])
        sys.stdout.write(text.decode(new if shown else prompt_bytes + new))
        sys.stdout.flush()
        shown.append(new)

    t0 = time.perf_counter()
    try:
        generate(decoder, prompt, a.max_new_tokens, a.temperature, a.top_k, generator, stream)
    except KeyboardInterrupt:
        sys.stdout.write(text.decode(b"", final=True) + "\n")
        print(f"\n[interrupted after {len(shown)} of {a.max_new_tokens} bytes]", flush=True)
        return 130
    seconds = time.perf_counter() - t0
    sys.stdout.write(text.decode(b"", final=True) + "\n")
    data = prompt_bytes + b"".join(shown)
    start = prompt.shape[1]
    print(
        f"\n[{a.max_new_tokens} bytes in {seconds:.2f} s ({a.max_new_tokens / seconds:.0f} "
        f"bytes/s), policy {policy}, prior {config.prior.name}, checkpoint {checkpoint}]"
    )
    route = decoder.route  # positions 0 .. len - 2: the last byte was drawn, not decoded
    if a.stats:
        print_stats(data, route, start)
        print_memory(decoder)
    if png is not None:
        plot_stats(data, route, start, png)
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
