"""Resume: a run stopped by a signal (or Ctrl-C mid-step) continues from its checkpoint and logs
exactly the rows an uninterrupted run logs (bitwise, CPU, same thread count)."""

import os
import signal

import pytest
import torch

import pyro_meta_attention.training.svi as svi
from pyro_meta_attention.config import smoke_config
from pyro_meta_attention.training.checkpoint import read_checkpoint
from pyro_meta_attention.training.data_identity import DataMismatch
from pyro_meta_attention.training.run_dir import RunDirError, load_history
from pyro_meta_attention.training.signals import TrainingInterrupted

CONFIG = smoke_config(train={"steps": 8, "log_every": 1})


def rows(history: list[dict]) -> list[dict]:
    """Metrics rows without their run id (two runs log the same numbers under different ids)."""
    return [{k: v for k, v in r.items() if k != "run_id"} for r in history]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run, on conftest's thread count (it runs before `fresh_pyro`)."""
    torch.set_num_threads(2)
    return svi.fit(CONFIG, out=tmp_path_factory.mktemp("whole"), progress=False)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_run_stopped_by_a_signal_resumes_bitwise(
    tmp_path, monkeypatch, signum, whole, stop_fit_at
):
    out = tmp_path / "cut"
    stop_fit_at(3, lambda: os.kill(os.getpid(), signum))
    with pytest.raises(TrainingInterrupted, match="after step 4 of 8") as stopped:
        svi.fit(CONFIG, out=out, progress=False, checkpoint_every=0)
    assert stopped.value.signum == signum
    assert read_checkpoint(out / "checkpoint.pt").step == 4
    assert not (out / "summary.json").exists()
    monkeypatch.undo()
    resumed = svi.resume(out, progress=False)
    assert rows(resumed.history) == rows(whole.history) == rows(load_history(out))
    assert {r["run_id"] for r in load_history(out)} == {
        read_checkpoint(out / "checkpoint.pt").state["run_id"]
    }
    assert resumed.summary["val_nats_per_token"] == whole.summary["val_nats_per_token"]
    with pytest.raises(RunDirError, match="finished run"):
        svi.resume(out, progress=False)


def test_keyboard_interrupt_mid_step_keeps_a_resumable_checkpoint(
    tmp_path, monkeypatch, whole, stop_fit_at
):
    out = tmp_path / "cut"

    stop_fit_at(5)
    with pytest.raises(KeyboardInterrupt):
        svi.fit(CONFIG, out=out, progress=False)
    assert read_checkpoint(out / "checkpoint.pt").step == 5
    monkeypatch.undo()
    assert rows(svi.resume(out, progress=False).history) == rows(whole.history)


def test_periodic_checkpoints_are_written_and_a_kill_keeps_the_last(tmp_path, stop_fit_at):
    out = tmp_path / "run"
    stop_fit_at(7, lambda: (_ for _ in ()).throw(SystemExit(9)))  # a hard kill
    with pytest.raises(SystemExit):
        svi.fit(CONFIG, out=out, progress=False, checkpoint_every=3)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 6 and {"optimizer", "rng", "corpus"} <= set(state)
    assert not list(out.glob(".*tmp"))  # no temporary file is left


def test_a_run_failing_before_its_first_step_leaves_no_run_files(tmp_path, stop_fit_at):
    stop_fit_at(0, lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        svi.fit(CONFIG, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_folder_holding_a_run_is_refused_unless_overwritten(tmp_path):
    out = tmp_path / "run"
    svi.fit(CONFIG.override(train={"steps": 2}), out=out, progress=False)
    with pytest.raises(RunDirError, match="--resume .* --overwrite"):
        svi.fit(CONFIG, out=out, progress=False, existing="refuse")
    assert read_checkpoint(out / "checkpoint.pt").step == 2  # untouched
    svi.fit(CONFIG.override(train={"steps": 3}), out=out, progress=False, existing="overwrite")
    assert read_checkpoint(out / "checkpoint.pt").step == 3
    assert [r["step"] for r in load_history(out)] == [0, 1, 2]  # none of the old run's rows


def test_resuming_on_changed_data_is_refused(tmp_path, stop_fit_at, corpus_file):
    corpus = corpus_file(bytes(range(256)) * 40)
    config = CONFIG.override(data={"path": str(corpus)})
    stop_fit_at(2, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(TrainingInterrupted):
        svi.fit(config, out=tmp_path / "run", progress=False)
    corpus.write_bytes(bytes(range(255, -1, -1)) * 40)
    with pytest.raises(DataMismatch, match="cannot resume .* has changed since training"):
        svi.resume(tmp_path / "run", progress=False)
