"""A run folder has an owner (issue 20): a run id in config.json, the checkpoint and every
metrics row, checked on resume, and a lock held for the life of a run."""

import json
import logging
import os
import shutil
import signal

import pytest

import pyro_meta_attention.training.svi as svi
from pyro_meta_attention.config import smoke_config
from pyro_meta_attention.training.checkpoint import read_checkpoint
from pyro_meta_attention.training.run_dir import RunDirError, load_history, lock_run_dir
from pyro_meta_attention.training.signals import TrainingInterrupted

CONFIG = smoke_config(train={"steps": 6, "log_every": 1})


def stopped_run(out, stop_fit_at, monkeypatch, config=CONFIG, at=3):
    """A run stopped by SIGTERM after `at` steps in `out` (resumable)."""
    stop_fit_at(at, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(TrainingInterrupted):
        svi.fit(config, out=out, progress=False, checkpoint_every=0)
    monkeypatch.undo()
    return out


def test_the_run_id_is_in_config_checkpoint_and_every_row(tmp_path):
    out = tmp_path / "run"
    svi.fit(CONFIG, out=out, progress=False)
    run_id = json.loads((out / "config.json").read_text())["run_id"]
    assert len(run_id) == 32 and read_checkpoint(out / "checkpoint.pt").state["run_id"] == run_id
    assert {r["run_id"] for r in load_history(out)} == {run_id}


def test_a_checkpoint_copied_from_another_run_is_refused(tmp_path, stop_fit_at, monkeypatch):
    mine = stopped_run(tmp_path / "mine", stop_fit_at, monkeypatch)
    other = stopped_run(tmp_path / "other", stop_fit_at, monkeypatch, at=2)
    shutil.copy(other / "checkpoint.pt", mine / "checkpoint.pt")
    with pytest.raises(RunDirError, match="checkpoint.pt is from run .* but .*config.json from"):
        svi.resume(mine, progress=False)


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path, stop_fit_at, monkeypatch):
    mine = stopped_run(tmp_path / "mine", stop_fit_at, monkeypatch)
    other = stopped_run(
        tmp_path / "other", stop_fit_at, monkeypatch, CONFIG.override(prior={"name": "none"})
    )
    config = json.loads((other / "config.json").read_text())
    config.pop("run_id")  # a config.json written before run ids
    (mine / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunDirError, match="another configuration than .*config.json"):
        svi.resume(mine, progress=False)


def test_rows_of_another_run_are_refused_naming_the_line(tmp_path, stop_fit_at, monkeypatch):
    out = stopped_run(tmp_path / "run", stop_fit_at, monkeypatch)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    row = json.loads(lines[1]) | {"run_id": "f" * 32}
    lines[1] = json.dumps(row)
    (out / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RunDirError, match=r"metrics.jsonl line 2 is a row of run f{32}"):
        svi.resume(out, progress=False)


def test_a_torn_last_row_is_cut_with_a_warning(tmp_path, stop_fit_at, monkeypatch, caplog):
    out = stopped_run(tmp_path / "run", stop_fit_at, monkeypatch)
    text = (out / "metrics.jsonl").read_text()
    (out / "metrics.jsonl").write_text(text + '{"step": 4, "lo')  # killed mid-write
    with caplog.at_level(logging.WARNING):
        result = svi.resume(out, progress=False)
    assert "metrics.jsonl line 5 is torn" in caplog.text
    assert (
        [r["step"] for r in load_history(out)]
        == list(range(6))
        == [r["step"] for r in result.history]
    )


def test_a_bad_row_before_the_last_is_refused(tmp_path, stop_fit_at, monkeypatch):
    out = stopped_run(tmp_path / "run", stop_fit_at, monkeypatch)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    with pytest.raises(RunDirError, match="metrics.jsonl line 2 is not a metrics row"):
        svi.resume(out, progress=False)


@pytest.mark.parametrize("missing", ["config.json", "metrics.jsonl"])
def test_a_missing_file_is_rebuilt_with_a_warning(
    tmp_path, stop_fit_at, monkeypatch, caplog, missing
):
    out = stopped_run(tmp_path / "run", stop_fit_at, monkeypatch)
    run_id = read_checkpoint(out / "checkpoint.pt").state["run_id"]
    (out / missing).unlink()
    with caplog.at_level(logging.WARNING):
        svi.resume(out, progress=False)
    assert f"{missing} is missing" in caplog.text
    assert json.loads((out / "config.json").read_text())["run_id"] == run_id
    steps = [r["step"] for r in load_history(out)]
    assert steps == (list(range(4, 6)) if missing == "metrics.jsonl" else list(range(6)))


def test_a_second_writer_is_refused_before_it_deletes_anything(tmp_path):
    out = tmp_path / "run"
    svi.fit(CONFIG, out=out, progress=False)
    before = (out / "checkpoint.pt").read_bytes()
    with lock_run_dir(out):  # another process writing this folder (a second open file)
        for existing in ("overwrite", "resume"):
            with pytest.raises(RunDirError, match=rf"in use by another run \(pid {os.getpid()}\)"):
                svi.fit(CONFIG, out=out, progress=False, existing=existing)
    assert (out / "checkpoint.pt").read_bytes() == before
    svi.fit(CONFIG.override(train={"steps": 2}), out=out, progress=False, existing="overwrite")
    assert read_checkpoint(out / "checkpoint.pt").step == 2  # the lock went with its holder
