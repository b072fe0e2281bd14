"""Held-out nats per position bucket, from 0 to a multiple of the training length.

    python experiments/length_curve.py --checkpoint runs/default/checkpoint.pt \
        --json curve.json --plot curve.png                      # 0 .. 8 x block_size
    python experiments/length_curve.py --checkpoint A.pt B.pt C.pt --label default full local \
        --factor 8 --windows 32 --json curve.json --plot curve.png
    python experiments/length_curve.py --smoke

For each checkpoint, `--windows` consecutive held-out windows of factor x block_size bytes
(the last 10 % of its training corpus) run through the network under each routing: soft (the
posterior-mean mixture), hard (argmax), and the same weights forced all-full and all-local
(pyro_meta_attention/analysis/length_curve.py). Positions are bucketed `--bucket` wide
(default block_size / 2); the JSON holds every bucket's mean nats and its standard error over
windows, the plot one panel per checkpoint with the training length marked. Only rotary
positions run past block_size: a checkpoint with learned positions is refused.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from common import (
    ArgumentParser,
    UsageError,
    at_least,
    load_text_run,
    main_guard,
    smoke_checkpoint,
)

from pyro_meta_attention.analysis.length_curve import VARIANTS, bucket, position_nats, windows
from pyro_meta_attention.mechanisms.cost import cost_model_for
from pyro_meta_attention.training.checkpoint import read_checkpoint
from pyro_meta_attention.training.run_dir import versions, write_json

STYLES = {  # variant -> (colour, line style, marker): soft and hard often lie on all-local
    "all-full": ("#d62728", "-", "o"),
    "all-local": ("#2ca02c", "-", "o"),
    "full-windowed": ("#ff7f0e", "-", "s"),
    "soft": ("#7f7f7f", "--", "^"),
    "hard": ("#9467bd", ":", "v"),
}


def curve(checkpoint: str, label: str, factor: int, count: int, width: int | None) -> dict:
    """One checkpoint's buckets for every variant."""
    block_size = read_checkpoint(checkpoint).config.model.block_size
    length = factor * block_size
    config, model, guide, source = load_text_run(checkpoint, length)
    m = config.model
    try:
        data = windows(source.val, length, count)
    except ValueError as e:
        raise UsageError(f"{checkpoint}: {e}") from None
    width = width or max(1, m.block_size // 2)
    cost = cost_model_for(m).normalised()
    t0 = time.perf_counter()
    nats = position_nats(model, guide, data, cost)
    result = {
        "label": label,
        "checkpoint": str(checkpoint),
        "prior": config.prior.name,
        "block_size": m.block_size,
        "window": m.window,
        "length": length,
        "windows": data.shape[0],
        "bucket": width,
        "corpus": source.record(),
        "seconds": time.perf_counter() - t0,
        "variants": {},
    }
    for variant, values in nats.items():
        starts, means, errors = bucket(values, width)
        inside = float(values[:, : m.block_size].mean())
        beyond = float(values[:, m.block_size :].mean()) if length > m.block_size else None
        result["starts"] = starts
        result["variants"][variant] = {
            "nats": means,
            "stderr": errors,
            "within_training_length": inside,
            "beyond_training_length": beyond,
        }
    return result


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(results), figsize=(5 * len(results), 4), squeeze=False, sharey=True
    )
    for ax, r in zip(axes[0], results, strict=True):
        centres = [s + r["bucket"] / 2 for s in r["starts"]]
        for variant, (colour, line, marker) in STYLES.items():
            v = r["variants"][variant]
            label = (
                f"{variant} (last {r['block_size']} keys)"
                if variant == "full-windowed"
                else variant
            )
            ax.errorbar(
                centres, v["nats"], yerr=v["stderr"], ls=line, marker=marker, ms=3, capsize=2,
                color=colour, label=label,
            )  # fmt: skip
        ax.axvline(r["block_size"], color="k", ls="--", lw=1, label="training length")
        ax.set_title(f"{r['label']} (prior {r['prior']})", fontsize=10)
        ax.set_xlabel(f"position (buckets of {r['bucket']})")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out nats per byte")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(f"Loss by position, {results[0]['windows']} held-out windows per model")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(__doc__)
    p.add_argument("--checkpoint", nargs="+", default=None, help="one or more checkpoint.pt")
    p.add_argument("--label", nargs="+", default=None, help="a name per checkpoint")
    p.add_argument("--factor", type=int, default=8, help="window length / block_size")
    p.add_argument("--windows", type=int, default=32, help="held-out windows per model")
    p.add_argument("--bucket", type=int, default=None, help="positions per bucket")
    p.add_argument("--json", default=None, help="write the curves here")
    p.add_argument("--plot", default=None, help="write a PNG here")
    p.add_flags("smoke")
    a = p.parse_args(argv)
    if a.checkpoint is None and not a.smoke:
        raise UsageError("--checkpoint is required (or --smoke)")
    for flag, value in (("--factor", a.factor), ("--windows", a.windows), ("--bucket", a.bucket)):
        at_least(value, 1, flag)
    for path, suffix in ((a.json, ".json"), (a.plot, ".png")):
        if path is not None and (Path(path).suffix != suffix or not Path(path).parent.is_dir()):
            raise UsageError(f"{path}: give a {suffix} file in an existing folder")
    checkpoints = [str(smoke_checkpoint())] if a.smoke else a.checkpoint
    labels = a.label or [Path(c).parent.name or c for c in checkpoints]
    if len(labels) != len(checkpoints):
        raise UsageError(f"{len(labels)} labels for {len(checkpoints)} checkpoints")
    factor, count = (2, 2) if a.smoke else (a.factor, a.windows)
    results = []
    for checkpoint, label in zip(checkpoints, labels, strict=True):
        r = curve(checkpoint, label, factor, count, a.bucket)
        results.append(r)
        T = r["block_size"]
        print(f"{label}: {r['windows']} windows of {r['length']} bytes ({r['seconds']:.1f} s)")
        print(f"  {'variant':>13}  {'0..' + str(T):>9}  {'beyond':>9}  (nats per byte)")
        for variant in VARIANTS:
            v = r["variants"][variant]
            beyond = v["beyond_training_length"]
            beyond = "—" if beyond is None else f"{beyond:.3f}"
            print(f"  {variant:>13}  {v['within_training_length']:9.3f}  {beyond:>9}")
    if a.json:
        command = "python experiments/length_curve.py " + " ".join(argv or sys.argv[1:])
        write_json(Path(a.json), {"command": command, "versions": versions(), "curves": results})
        print(f"wrote {a.json}")
    if a.plot:
        plot(results, Path(a.plot))
        print(f"wrote {a.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
