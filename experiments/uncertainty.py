"""Routing uncertainty of a trained checkpoint: total, aleatoric and epistemic, per layer.

    python experiments/uncertainty.py --checkpoint runs/latest/checkpoint.pt
    python experiments/uncertainty.py --checkpoint runs/c600/checkpoint.pt --samples 64 --out runs/c600
    python experiments/uncertainty.py --smoke --out /tmp/unc   # trains a tiny model first

Draws --samples posterior samples of every routing site on --batches validation batches (the
held-out split of the checkpoint's corpus, or of --data), prints a table per layer and the
tokens with the highest and lowest epistemic uncertainty, and with --out writes
uncertainty.json ({"config": ..., "report": ...}).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pyro
import torch

from pyro_meta_attention.checkpoint import CHECKPOINT_FILE, load_checkpoint, write_json
from pyro_meta_attention.config import smoke_config
from pyro_meta_attention.data import CorpusError, load_corpus, val_windows
from pyro_meta_attention.infer import fit
from pyro_meta_attention.predictive import format_report, uncertainty_report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="checkpoint.pt (required unless --smoke)")
    p.add_argument("--data", default=None, help="corpus file (default: the checkpoint's corpus)")
    p.add_argument("--samples", type=int, default=32, help="posterior samples S")
    p.add_argument("--batches", type=int, default=2, help="validation batches")
    p.add_argument("--top-k", type=int, default=5, help="tokens listed per direction")
    p.add_argument("--out", default=None, help="folder for uncertainty.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="train a tiny model and report on it")
    a = p.parse_args(argv)
    if a.checkpoint is None and not a.smoke:
        p.error("--checkpoint is required unless --smoke")
    if a.samples < 1 or a.batches < 1:
        p.error("--samples and --batches must be >= 1")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = a.checkpoint
        if a.smoke:
            fit(smoke_config(train={"seed": a.seed}), out=tmp, progress=False)
            checkpoint = str(Path(tmp) / CHECKPOINT_FILE)
        try:
            config, model, guide = load_checkpoint(checkpoint)
            data = a.data if a.data is not None else config.data.path
            block = config.model.block_size
            corpus = load_corpus(data, block, config.data.max_bytes, config.data.val_fraction)
        except (FileNotFoundError, CorpusError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        batches = val_windows(corpus.val, config.train.batch_size, block, a.batches)
        x = torch.cat([xb for xb, _ in batches])  # [N * B, T]
        pyro.set_rng_seed(a.seed)
        report = uncertainty_report(model, guide, x, a.samples, top_k=a.top_k)
    print(format_report(report))
    if a.out is not None:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        run = {
            "checkpoint": "smoke (temporary)" if a.smoke else str(checkpoint),
            "data": corpus.name,
            "corpus_sha256": corpus.sha256,
            "samples": a.samples,
            "batches": a.batches,
            "seed": a.seed,
        }
        write_json(out / "uncertainty.json", {"config": run, "report": report})
        print(f"\nwrote {out / 'uncertainty.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
