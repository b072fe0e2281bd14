"""What Ray costs a study on this machine: the same runs through `runner.py` on the local pool
and on a local Ray instance, side by side in one process.

    python experiments/bench_runner.py --runs 32 --jobs 2 --json experiments/results/bench_runner.json
    python experiments/bench_runner.py --smoke --json /tmp/bench_runner.json   # 2 runs, for tests

Every run is one (model, seed) run of the text study's smoke configuration (`text_study.run_one`,
`--smoke`: a tiny network, 6 SVI steps, scored on the held-out windows), trained into a fresh
folder for each backend. Reported: the study's wall time on each backend (Ray's includes
starting and stopping its local instance), Ray's start-up alone (the same call with runs that do
nothing), the overhead per run ((ray - local - start-up) / runs), the peak resident memory of a
worker process on each backend (`ru_maxrss` of the process that ran the run) and the resident
memory of Ray's own processes (GCS server, raylet, agents: everything whose command line names
ray, workers excluded) while the runs ran. Rows must agree across backends (checked).
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import ArgumentParser, UsageError, at_least, main_guard, output_file
from runner import run_calls
from text_study import run_one

from pyro_meta_attention.config import smoke_config
from pyro_meta_attention.training.run_dir import versions, write_json

CLOCK = ("train_s", "wall_ratio_hard", "run_dir")  # row fields that depend on time or folder


def ray_processes_mib() -> float:
    """Resident MiB of Ray's own processes on this machine (not the workers: `ray::` tasks)."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if "/ray/" in command and "ray::" not in command and "default_worker" not in command:
            total += next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS"))
    return total / 1024


def measured(*args) -> tuple[dict, float, float]:
    """run_one(*args), the peak resident MiB of this process, and Ray's processes' MiB."""
    row = run_one(*args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return row, peak, ray_processes_mib()


def nothing(i: int) -> int:
    return i


def study(backend: str, runs: int, jobs: int, root: Path) -> dict:
    config = smoke_config().override(prior={"name": "compute-dirichlet"})
    folder = root / backend / "bench" / "compute-dirichlet"  # a study's layout, one per backend
    calls = [
        ("compute-dirichlet", config.override(train={"seed": s}), folder / f"seed{s}", 2, None)
        for s in range(runs)
    ]
    t0 = time.perf_counter()
    results = run_calls(measured, calls, jobs, backend, progress=False, desc=backend)
    wall = time.perf_counter() - t0
    rows = [{k: v for k, v in row.items() if k not in CLOCK} for row, _, _ in results]
    return {
        "backend": backend,
        "wall_s": wall,
        "worker_peak_mib": statistics.fmean(peak for _, peak, _ in results),
        "ray_processes_mib": max(mib for *_, mib in results) if backend == "ray" else 0.0,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(__doc__)
    p.add_argument("--runs", type=int, default=None, help="runs per backend (default 8; smoke 2)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once, each in its own process")
    p.add_argument("--json", default=None, help="write the measurements here")
    p.add_flags("smoke")
    a = p.parse_args(argv)
    a.runs = a.runs or (2 if a.smoke else 8)
    at_least(a.runs, 1, "--runs")
    at_least(a.jobs, 2, "--jobs")  # worker processes on both backends: memory comparable
    path = output_file(a.json, "--json", ".json") if a.json else None
    with tempfile.TemporaryDirectory(prefix="bench-runner-") as tmp:
        local = study("local", a.runs, a.jobs, Path(tmp))
        ray = study("ray", a.runs, a.jobs, Path(tmp))
        t0 = time.perf_counter()
        run_calls(nothing, [(i,) for i in range(a.jobs)], a.jobs, "ray", progress=False)
        startup = time.perf_counter() - t0
    if local["rows"] != ray["rows"]:
        raise UsageError("the two backends' rows differ: the Ray runs are not the pool's")
    per_run = (ray["wall_s"] - local["wall_s"] - startup) / a.runs
    record = {
        "command": "python experiments/bench_runner.py " + " ".join(sys.argv[1:] or argv or []),
        "runs": a.runs,
        "jobs": a.jobs,
        "local_wall_s": local["wall_s"],
        "ray_wall_s": ray["wall_s"],
        "ray_startup_s": startup,
        "ray_overhead_per_run_s": per_run,
        "local_worker_peak_mib": local["worker_peak_mib"],
        "ray_worker_peak_mib": ray["worker_peak_mib"],
        "ray_processes_mib": ray["ray_processes_mib"],
        "rows_identical": True,
        "versions": versions(),
    }
    print(f"{a.runs} smoke runs, {a.jobs} at a time, one thread each (rows identical)")
    print(f"local pool           {local['wall_s']:7.1f} s")
    print(f"ray (local instance) {ray['wall_s']:7.1f} s  (start-up alone {startup:.1f} s)")
    print(f"ray overhead per run {per_run:7.2f} s")
    print(
        f"worker peak memory   pool {local['worker_peak_mib']:.0f} MiB, "
        f"ray {ray['worker_peak_mib']:.0f} MiB; Ray's own processes {ray['ray_processes_mib']:.0f} MiB"
    )
    if path is not None:
        write_json(path, record)
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
