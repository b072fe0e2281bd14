"""experiments/runner.py: the one study runner. Rows in call order at one thread per run, a run's
own error (not a wrapper), Ctrl-C cancels the runs not started; and a smoke study on a local
Ray instance gives the local pool's table row for row."""

import json
import os
import signal
import threading
import time

import pytest
import torch
from runner import run_calls
from text_study import main as text_study


def threads_and_square(i: int) -> tuple[int, int]:
    return torch.get_num_threads(), i * i


def fail_on_two(i: int) -> int:
    if i == 2:
        raise ValueError(f"run {i} failed")
    return i


def interrupt_first(i: int, folder: str) -> int:
    """Call 0 is Ctrl-C; the others mark that they started and take a while."""
    if i == 0:
        time.sleep(0.5)  # the second worker has taken call 1 by now
        raise KeyboardInterrupt
    open(os.path.join(folder, f"{i}.started"), "w").close()
    time.sleep(5)
    return i


def save_on_interrupt(i: int, folder: str) -> int:
    """A long run that marks its start, and on KeyboardInterrupt (Ray's cancel) its save."""
    open(os.path.join(folder, f"{i}.started"), "w").close()
    try:
        for _ in range(600):  # Ray's cancel is an exception raised between bytecodes
            time.sleep(0.1)
    except KeyboardInterrupt:
        open(os.path.join(folder, f"{i}.saved"), "w").close()
        raise
    return i


@pytest.mark.parametrize("jobs", [1, 2])
def test_rows_come_back_in_call_order_at_one_thread_each(jobs):
    before = torch.get_num_threads()
    rows = run_calls(threads_and_square, [(i,) for i in range(5)], jobs=jobs, progress=False)
    assert rows == [(1, i * i) for i in range(5)]
    assert torch.get_num_threads() == before  # restored in this process


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failed_run_raises_its_own_error(jobs):
    with pytest.raises(ValueError, match="run 2 failed"):
        run_calls(fail_on_two, [(i,) for i in range(4)], jobs=jobs, progress=False)


def test_ctrl_c_cancels_the_runs_not_started(tmp_path):
    calls = [(i, str(tmp_path)) for i in range(8)]
    with pytest.raises(KeyboardInterrupt):
        run_calls(interrupt_first, calls, jobs=2, progress=False)
    started = len(list(tmp_path.glob("*.started")))
    assert 1 <= started <= 3  # call 1, and at most the one call the pool had queued ahead


def test_bad_backend_and_address_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown backend 'dask'"):
        run_calls(abs, [(1,)], backend="dask")
    with pytest.raises(ValueError, match="needs --backend ray"):
        run_calls(abs, [(1,)], address="auto")


def table_rows(out, tag: str) -> list[dict]:
    """A study's rows without what depends on the clock or the output folder."""
    rows = json.loads((out / f"text-{tag}.json").read_text())["runs"]
    clock = ("train_s", "wall_ratio_hard", "run_dir")  # seconds, a timing ratio, the folder
    return [{k: v for k, v in row.items() if k not in clock} for row in rows]


def test_a_smoke_study_on_ray_gives_the_local_pools_table(tmp_path):
    common = ["--smoke", "--no-progress", "--seeds", "2", "--models", "fixed-local"]
    common += ["compute-dirichlet", "--jobs", "2"]
    assert text_study([*common, "--tag", "pool", "--out", str(tmp_path / "pool")]) == 0
    board = tmp_path / "tb"
    ray_study = ["--tag", "ray", "--out", str(tmp_path / "ray"), "--backend", "ray"]
    assert text_study([*common, *ray_study, "--tensorboard", str(board)]) == 0
    pool, ray = table_rows(tmp_path / "pool", "pool"), table_rows(tmp_path / "ray", "ray")
    assert len(pool) == 4
    assert pool == ray  # bit for bit: same seeds, one thread per run on either backend
    assert pool[0]["nats_hard"] != pool[1]["nats_hard"]  # two seeds: the rows differ
    for run in ("fixed-local/seed0", "fixed-local/seed1", "compute-dirichlet/seed1"):
        assert list((board / "ray" / run).glob("events.out.tfevents.*"))  # written by a task


def test_a_failed_ray_task_raises_the_runs_own_error(monkeypatch):
    tests = os.path.dirname(__file__)  # the tasks import this module to find fail_on_two
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    with pytest.raises(ValueError, match="run 2 failed") as e:
        run_calls(fail_on_two, [(i,) for i in range(4)], jobs=2, backend="ray", progress=False)
    assert "RayTaskError" not in type(e.value).__name__


def test_ctrl_c_on_ray_cancels_the_runs_not_started_and_lets_running_ones_save(
    tmp_path, monkeypatch, ctrl_c_reaches_python
):
    tests = os.path.dirname(__file__)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    calls = [(i, str(tmp_path)) for i in range(6)]

    def ctrl_c_once_two_run() -> None:  # Ctrl-C to this process once both workers have a run
        while len(list(tmp_path.glob("*.started"))) < 2:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c_once_two_run, daemon=True).start()
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run_calls(save_on_interrupt, calls, jobs=2, backend="ray", progress=False)
    assert time.perf_counter() - t0 < 50  # not the runs' 60 s
    started = sorted(p.stem for p in tmp_path.glob("*.started"))
    assert len(started) == 2  # the other four were cancelled before they started
    assert sorted(p.stem for p in tmp_path.glob("*.saved")) == started
