"""A signal under torchrun (issue 20): SIGTERM to one rank stops every rank after the same step,
rank 0 saves one checkpoint with every rank's random states, each rank says so in one line,
and `torchrun ... --distributed --resume` at the same world size finishes the run; a single
process is refused it in one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pyro_meta_attention.training.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[2]
STEPS = 300


def torchrun(*args: str) -> list[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return command + ["--nproc_per_node", "2", "experiments/train_svi.py", "--distributed", *args]


def rank_pid(out: Path, rank: int) -> int | None:
    """The pid of the worker process of rank `rank` writing `out` (from /proc)."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        mine = b"experiments/train_svi.py" in cmdline and os.fsencode(str(out)) in cmdline
        if mine and f"RANK={rank}".encode() in environ:
            return int(proc.name)
    return None


def test_sigterm_to_one_rank_stops_all_and_the_run_resumes_under_torchrun(tmp_path):
    out = tmp_path / "run"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    flags = ["--smoke", "--no-progress", "--steps", str(STEPS), "--checkpoint-every", "0"]
    proc = subprocess.Popen(
        torchrun(*flags, "--out", str(out)),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics, deadline = out / "metrics.jsonl", time.monotonic() + 240
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    os.kill(rank_pid(out, 1), signal.SIGTERM)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode != 0  # torchrun reports a failed worker (exit 143) as exit 1
    lines = [line for line in stderr.splitlines() if line.startswith("error: interrupted")]
    assert len(lines) == 2, stderr[-3000:]
    assert any("checkpoint saved in" in line for line in lines)
    assert any("(rank 1; rank 0 saved the checkpoint)" in line for line in lines)
    assert all("torchrun --nproc_per_node 2" in line for line in lines)
    checkpoint = read_checkpoint(out / "checkpoint.pt")
    assert 0 < checkpoint.step < STEPS and checkpoint.state["world_size"] == 2
    assert len(checkpoint.state["rng_ranks"]) == 2
    assert all(f"after step {checkpoint.step} of {STEPS}" in line for line in lines)

    alone = subprocess.run(
        [sys.executable, "experiments/train_svi.py", "--resume", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert alone.returncode == 2 and "trained by 2 process(es), not 1" in alone.stderr

    again = subprocess.run(
        torchrun("--resume", str(out), "--no-progress"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS - 1
