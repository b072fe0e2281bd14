"""Shared fixtures: a fresh seeded Pyro for every test, and helpers to run experiments/ scripts
as a user would and to check how they refuse bad input."""

import importlib
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyro
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_pyro():
    """Every test starts seeded, with module-local params and an empty param store."""
    pyro.settings.set(module_local_params=True)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    torch.set_num_threads(2)
    yield
    pyro.clear_param_store()


@pytest.fixture
def ctrl_c_reaches_python():
    """SIGINT raises KeyboardInterrupt here and in the processes this test starts, however pytest
    was started: a background job of a non-interactive shell starts with SIGINT ignored, and a
    Python started so (or started by one) never sees a Ctrl-C."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # exec resets it to default
    yield
    signal.signal(signal.SIGINT, previous)


def _run_script(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python experiments/<script> ARGS` from the repository root; output captured as text."""
    return subprocess.run(
        [sys.executable, str(ROOT / "experiments" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess) -> None:
    """The script refused its input as users should see it: exit 2, one `error: ...` line."""
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr


@pytest.fixture(scope="session")
def run_script() -> Callable[..., subprocess.CompletedProcess]:
    """run_script("train_svi.py", "--smoke", ...) -> CompletedProcess."""
    return _run_script


def _run_main(script: str, *args: str) -> subprocess.CompletedProcess:
    """`experiments/<script> ARGS` in this process, from the repository root as `_run_script`,
    through its `main_guard` (faster than a subprocess; the same exit code and stderr)."""
    import contextlib
    import io
    import os

    from common import main_guard

    module = importlib.import_module(Path(script).stem)  # phase1/run.py: `run` (pytest pythonpath)
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(ROOT)  # some commands name files relative to the repository root
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main_guard(lambda: module.main(list(args)))
        except SystemExit as e:  # argparse's own errors
            code = e.code
        finally:
            os.chdir(here)
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def run_main() -> Callable[..., subprocess.CompletedProcess]:
    """run_main("train_svi.py", "--smoke", ...) -> CompletedProcess, in this process."""
    return _run_main


@pytest.fixture(scope="session")
def one_line_error() -> Callable[[subprocess.CompletedProcess], None]:
    """one_line_error(proc) asserts exit 2 and a single `error: ...` line on stderr."""
    return _assert_one_line_error


@pytest.fixture
def corpus_file(tmp_path) -> Callable[[bytes | None], Path]:
    """corpus_file(content) -> a path in tmp_path holding content (None: the file is missing)."""

    def make(content: bytes | None) -> Path:
        path = tmp_path / "corpus.txt"
        if content is not None:
            path.write_bytes(content)
        return path

    return make


def _keyboard_interrupt() -> None:
    raise KeyboardInterrupt


@pytest.fixture
def stop_fit_at(monkeypatch) -> Callable[..., None]:
    """stop_fit_at(step, stop=Ctrl-C): the SVI loop calls `stop()` at the top of that step
    (through `hardening_tau`, which the loop calls once per step); `monkeypatch.undo()` ends it."""
    import pyro_meta_attention.training.svi as svi

    real = svi.hardening_tau

    def arm(step: int, stop: Callable[[], None] = _keyboard_interrupt) -> None:
        def hook(s, *args):
            if s == step:
                stop()
            return real(s, *args)

        monkeypatch.setattr(svi, "hardening_tau", hook)

    return arm
