"""Train the shipped demo checkpoint (pyro_meta_attention/demo/): the `mqar-routing` preset at
seed 0 on one thread, stripped of optimiser and random states, with a JSON record beside it.

    python experiments/demo_checkpoint.py                    # regenerates the shipped file
    python experiments/demo_checkpoint.py --smoke --out /tmp/demo   # tiny, for tests

The record holds the command, seed, config, the run's summary (routing shares, held-out nats)
and the sha256 that `pyro_meta_attention.demo.load_demo` checks. On the machine that made it the
command regenerates the file bit for bit (one thread, deterministic CPU kernels); elsewhere
floating-point sums may differ in the last bits.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
from common import ArgumentParser, main_guard, out_folder

from pyro_meta_attention.config import MQAR_TASK, mqar_routing_config, smoke_config
from pyro_meta_attention.demo import HERE, sha256
from pyro_meta_attention.training.checkpoint import read_checkpoint
from pyro_meta_attention.training.run_dir import CHECKPOINT_FILE, versions, write_atomic, write_json
from pyro_meta_attention.training.svi import fit

NAME = "mqar-routing"
KEEP = ("config", "step", "model", "guide", "corpus")  # what a demo checkpoint holds
SUMMARY = ("val_nats_per_token", "val_accuracy", "routing_share", "kl", "argmax_differs")
SUMMARY += ("data_routed", "flipped_tv", "verdict")  # of the run, into the record


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(__doc__)
    p.add_argument("--out", default=None, help=f"folder for {NAME}.pt/.json (default: {HERE})")
    p.add_flags("smoke", "progress")
    a = p.parse_args(argv)
    out = out_folder(a.out) or HERE
    torch.set_num_threads(1)
    if a.smoke:
        config = smoke_config(data={"path": MQAR_TASK}, train={"steps": 4})
    else:
        config = mqar_routing_config(train={"seed": 0})
    with tempfile.TemporaryDirectory(prefix="demo-") as run:
        result = fit(config, out=run, progress=not a.no_progress)
        state = read_checkpoint(Path(run) / CHECKPOINT_FILE).state
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{NAME}.pt"
    write_atomic(path, lambda f: torch.save({k: state[k] for k in KEEP}, f))
    command = "python experiments/demo_checkpoint.py" + (" --smoke" if a.smoke else "")
    summary = {k: result.summary[k] for k in SUMMARY}
    record = {
        "command": command,
        "seed": config.train.seed,
        "threads": 1,
        "config": config.to_dict(),
        "summary": summary,
        "versions": versions(),
        "bytes": path.stat().st_size,
        "sha256": sha256(path),
    }
    write_json(path.with_suffix(".json"), record)
    print(f"wrote {path} ({record['bytes']} bytes, sha256 {record['sha256'][:12]}…)")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
