"""One runner for every study: each (model, seed) run is one call of a study's `run_one`, on a
local process pool or as a task on a Ray cluster, one torch thread per run, with a progress bar.

    rows = run_calls(run_one, calls, jobs=2)                                # this machine
    rows = run_calls(run_one, calls, jobs=2, backend="ray")                 # a local Ray instance
    rows = run_calls(run_one, calls, jobs=1, backend="ray", address="auto") # a Ray cluster

A call is the tuple of `run_one`'s arguments; rows come back in call order. `run_one` does its
own reuse and resume (each study's reuses a finished run folder and continues an interrupted one
from its checkpoint), so a study stopped by Ctrl-C, a failed run or a lost node is started again
with the same command and trains only what is missing. Ctrl-C cancels the runs that have not
started; the running ones get the interrupt, save their checkpoint and stop.

Ray (the optional `cluster` extra): every run is a task with `num_cpus=1`; without `address` a
local instance with `jobs` CPUs is started (and stopped at the end), with one the driver joins
that cluster. A task runs in the driver's working directory with the driver's `experiments/`
folders on its PYTHONPATH, so run folders land where the driver says: on a cluster that needs
every node to see the same paths (a shared file system) and the package installed.
If this process has already called `ray.init`, that session is used as it is (its runtime_env
must then put experiments/ on the tasks' PYTHONPATH) and left running.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

BACKENDS = ("local", "ray")
HERE = Path(__file__).resolve().parent
SAVE_S = 60  # seconds a cancelled Ray run gets to save its checkpoint before Ray stops
PATHS = [str(HERE), str(HERE / "phase1")]  # the scripts' modules, for a task to import them


def one_thread(fn: Callable[..., Any], cwd: str, *args: Any) -> Any:
    """fn(*args) at one torch thread in `cwd` (two runs of two threads each on two cores were
    measured ~20x slower than two of one); the thread count is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    os.chdir(cwd)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(threads)


def run_calls(
    fn: Callable[..., Any],
    calls: Sequence[tuple],
    jobs: int = 1,
    backend: str = "local",
    address: str | None = None,
    progress: bool = True,
    desc: str = "runs",
    names: Sequence[str] | None = None,
) -> list[Any]:
    """fn(*call) for every call, one thread each; results in call order.

    local: in this process (jobs = 1) or `jobs` spawned processes; ray: Ray tasks (see above).
    `names` label the progress bar's last finished run. A run's exception stops the study
    (the runs not started are cancelled; finished run folders stay for the next try).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose from {', '.join(BACKENDS)}")
    if address is not None and backend != "ray":
        raise ValueError("--address names a Ray cluster: it needs --backend ray")
    names = list(names) if names is not None else [str(i) for i in range(len(calls))]
    cwd = os.getcwd()
    with tqdm(total=len(calls), desc=desc, disable=not progress) as bar:

        def done(i: int) -> None:
            bar.set_postfix_str(names[i])
            bar.update()

        if backend == "ray":
            return _on_ray(fn, calls, jobs, address, cwd, done)
        if jobs == 1:
            rows = []
            for i, call in enumerate(calls):
                rows.append(one_thread(fn, cwd, *call))
                done(i)
            return rows
        return _on_pool(fn, calls, jobs, cwd, done)


def _on_pool(fn, calls, jobs: int, cwd: str, done: Callable[[int], None]) -> list[Any]:
    rows: dict[int, Any] = {}
    pool = ProcessPoolExecutor(jobs, multiprocessing.get_context("spawn"))  # CUDA cannot fork
    try:
        futures = {pool.submit(one_thread, fn, cwd, *call): i for i, call in enumerate(calls)}
        for future in as_completed(futures):
            rows[futures[future]] = future.result()
            done(futures[future])
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        for child in multiprocessing.active_children():
            child.terminate()  # SIGTERM: a running run saves its checkpoint and stops
        pool.shutdown(wait=True)
        raise
    pool.shutdown()
    return [rows[i] for i in range(len(calls))]


def _on_ray(fn, calls, jobs: int, address: str | None, cwd: str, done) -> list[Any]:
    try:
        import ray
    except ImportError:
        raise ValueError(
            "--backend ray needs Ray: pip install -e '.[cluster]' (or pip install ray)"
        ) from None
    started = not ray.is_initialized()
    if started:
        env = {"PYTHONPATH": os.pathsep.join(PATHS + [os.environ.get("PYTHONPATH", "")])}
        options: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": False}
        if address is None:
            options |= {"num_cpus": jobs, "include_dashboard": False}
        else:
            options["address"] = address
        ray.init(**options)
    task = ray.remote(num_cpus=1)(one_thread)
    refs = [task.remote(fn, cwd, *call) for call in calls]
    index = {ref: i for i, ref in enumerate(refs)}
    rows: dict[int, Any] = {}
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)  # Ctrl-C seen
            if not ready:
                continue
            i = index[ready[0]]
            try:
                rows[i] = ray.get(ready[0])
            except ray.exceptions.RayTaskError as e:  # the run's own error, not Ray's wrapper
                raise (e.cause or e) from None
            done(i)
    except BaseException:
        for ref in pending:
            ray.cancel(ref)  # not started: dropped; running: KeyboardInterrupt, which saves
        ray.wait(pending, num_returns=len(pending), timeout=SAVE_S)  # let them save
        raise
    finally:
        if started:
            ray.shutdown()
    return [rows[i] for i in range(len(calls))]
