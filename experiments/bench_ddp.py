"""SVI step time of a DDP run with 1, 2, ... processes on this machine (torchrun, train_svi).

    python experiments/bench_ddp.py --processes 1 2 --steps 60 --json experiments/results/bench_ddp.json
    python experiments/bench_ddp.py --smoke --steps 3 --json /tmp/bench_ddp.json

For each process count N it runs `torchrun --standalone --nproc_per_node N
experiments/train_svi.py --distributed` (default config, or the smoke one) with --threads torch
threads per process, and reads the median step time of rank 0 from the run's summary.json.
The batch is per process (train_svi's --batch-size), so N processes train on N times the
windows per step: windows per second is the throughput to compare. The median includes the
gradient all-reduce (gloo on the CPU) and the loss reduction of every step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from common import ArgumentParser, UsageError, at_least, main_guard

from pyro_meta_attention.config import RunConfig, smoke_config
from pyro_meta_attention.training.run_dir import SUMMARY_FILE, versions, write_json

HERE = Path(__file__).resolve().parent


def run(processes: int, steps: int, threads: int, smoke: bool, out: Path) -> dict:
    """One torchrun launch; its rank 0 summary's step time and the throughput."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", str(processes), str(HERE / "train_svi.py"), "--distributed"]
    command += ["--steps", str(steps), "--no-progress", "--out", str(out)]
    command += ["--smoke"] if smoke else []
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise UsageError(f"torchrun with {processes} processes failed: {tail[0]}")
    summary = json.loads((out / SUMMARY_FILE).read_text())
    config = (smoke_config() if smoke else RunConfig()).train
    windows = processes * config.batch_size
    step = summary["median_step_s"]
    return {
        "processes": processes,
        "threads_per_process": threads,
        "median_step_s": step,
        "windows_per_step": windows,
        "windows_per_s": windows / step,
    }


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(__doc__)
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=60, help="SVI steps per launch")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--json", default=None, help="write the result here")
    p.add_flags("smoke")
    a = p.parse_args(argv)
    for n in a.processes:
        at_least(n, 1, "--processes")
    at_least(a.steps, 2, "--steps")
    at_least(a.threads, 1, "--threads")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as folder:
        for n in a.processes:
            rows.append(run(n, a.steps, a.threads, a.smoke, Path(folder) / f"n{n}"))
            r = rows[-1]
            print(
                f"{n} process(es) x {a.threads} thread(s): median {1000 * r['median_step_s']:7.1f}"
                f" ms/step, {r['windows_per_step']} windows/step, {r['windows_per_s']:.1f} windows/s"
            )
    result = {
        "rows": rows,
        "steps": a.steps,
        "config": "smoke" if a.smoke else "default",
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "versions": versions(),
        "command": "python experiments/bench_ddp.py " + " ".join(argv or sys.argv[1:]),
    }
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(a.json), result)
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
