"""Every script refuses bad input the same way: one `error: ...` line on stderr, exit code 2,
no traceback (`experiments/common.py`); a refused training run writes nothing."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from checkpoint_files import BAD, bad_checkpoint

from pyro_meta_attention.training.checkpoint import read_checkpoint

MISSING = "/no/such/file"
BAD_INPUTS = [
    ("train_svi.py --smoke --data " + MISSING, "not found"),
    ("train_svi.py --smoke --prior sparse-dirichlet --kappa 9", "kappa / M < 1"),
    ("train_svi.py --smoke --prior bogus", "invalid choice"),
    ("evaluate.py --checkpoint " + MISSING, "not found"),
    ("evaluate.py", "--checkpoint is required"),
    ("evaluate.py --smoke --policy sometimes", "bad policy"),
    ("evaluate.py --smoke --repeats 0", "--repeats"),
    ("evaluate.py --smoke --batches 0", "--batches"),
    ("evaluate.py --smoke --out ", "--out must not be empty"),
    ("evaluate.py --smoke --out README.md/eval", "README.md is not a folder"),
    ("uncertainty.py --smoke --out README.md/unc", "README.md is not a folder"),
    ("train_svi.py --smoke --out ", "--out must not be empty"),
    ("train_svi.py --smoke --out README.md/run", "README.md is not a folder"),
    ("train_svi.py --resume /no/such/run", "holds no checkpoint"),
    ("train_svi.py --resume /tmp --steps 5", "drop --steps"),
    ("train_svi.py --resume /tmp --distributed", "runs under torchrun"),
    ("train_svi.py --smoke --distributed", "runs under torchrun"),
    ("train_svi.py --smoke --checkpoint-every -1", "--checkpoint-every"),
    ("bench_step.py --smoke --checkpoint-cost --steps 1", "--steps"),
    ("bench_hard_routing.py --smoke --repeats 0", "--repeats"),
    ("bench_hard_routing.py --smoke --threads -1", "--threads"),
    ("uncertainty.py --checkpoint " + MISSING, "not found"),
    ("uncertainty.py --smoke --data " + MISSING, "not found"),
    ("uncertainty.py --smoke --samples 0", "--samples"),
    ("bench_step.py --smoke --steps 0", "--steps"),
    ("bench_ddp.py --smoke --processes 0", "--processes"),
    ("bench_ddp.py --smoke --steps 1", "--steps"),
    ("elbo_variance.py --smoke --repeats 1", "--repeats"),
    ("bench_hard_routing.py --smoke --batch 0", "--batch"),
    ("bench_hard_routing.py --smoke --mix 50/60/0", "--mix"),
    ("bench_hard_routing.py --smoke --mix learned:no/such/run", "--mix"),
    ("bench_hard_routing.py --smoke --T 0", "--T"),
    ("mqar_study.py --smoke --tag t --models bogus", "unknown prior"),
    ("mqar_study.py --smoke --tag t --models cost-penalised@x", "not a number"),
    ("mqar_study.py --smoke --tag t --set train.nope=1", "SECTION.FIELD=VALUE"),
    ("mqar_study.py --smoke --tag t --seeds 0", "--seeds"),
    ("mqar_study.py --smoke --tag t --set train.steps=many", "expects type int"),
    ("train_svi.py --smoke --set train.full_warmup=1.5", "expects type int"),
    ("train_svi.py --smoke --set model.token_shift=1", "expects type bool"),
    ("train_svi.py --smoke --set nope.x=1", "SECTION.FIELD=VALUE"),
    ("mqar_study.py --smoke --tag a/b", "--tag"),
    ("text_study.py --smoke --tag t --models bogus", "unknown prior"),
    ("text_study.py --smoke --tag t --models fixed-layers", "name each layer's mechanism"),
    ("text_study.py --smoke --tag t --models fixed-layers@local,fast", "one mechanism per layer"),
    ("train_svi.py --smoke --prior fixed-layers --set prior.layers=local", "for the network's 2"),
    ("text_study.py --smoke --tag t --data /nonexistent.txt", "no such file"),
    ("text_study.py --smoke --tag t --steps 0", "--steps"),
    ("mqar_study.py --smoke --tag t --combine nosuchtag --results /tmp", "cannot read"),
    ("decision_price.py --smoke --targets 1.5", "--targets"),
    ("decision_price.py --samples 5", "--samples"),
    ("phase1/run.py --budget smoke --models bogus", "unknown model"),
    ("phase1/run.py --budget smoke --jobs 0", "--jobs"),
    ("phase1/run.py --rewrite " + MISSING, "not a Phase-1 record"),
    ("bench_decode.py --smoke --steps 0", "--steps"),
    ("bench_decode.py --smoke --mix 50/60/0", "--mix"),
    ("bench_decode.py --smoke --json README.md/b.json", "README.md is not a folder"),
    ("generate.py --prompt x", "--checkpoint is required"),
    ("generate.py --smoke --prompt a --prompt-file b", "exactly one of --prompt"),
    ("generate.py --smoke --prompt ", "the prompt is empty"),
    ("generate.py --smoke --prompt-file " + MISSING, "no such file"),
    ("generate.py --smoke --max-context 4", "local window 8"),
    ("token_gain.py", "--local and --full are required"),
    ("token_gain.py --local a b --full c", "2 --local for 1 --full"),
    ("token_gain.py --smoke --target 1.5", "--target"),
    ("token_gain.py --smoke --json out.txt", "give a .json file"),
    ("token_gain.py --local " + MISSING + " --full " + MISSING, "not found"),
    ("length_curve.py", "--checkpoint is required"),
    ("length_curve.py --smoke --factor 0", "--factor"),
    ("length_curve.py --smoke --json out.txt", "give a .json file"),
    ("length_curve.py --checkpoint tests/legacy/checkpoint.pt", "learned positions"),
    ("length_curve.py --checkpoint a b --label x", "1 labels for 2 checkpoints"),
    ("bench_decode.py --checkpoint tests/legacy/checkpoint.pt", "learned positions"),
    ("bench_decode.py --smoke --nats-windows 0", "--nats-windows"),
    ("generate.py --smoke --max-context 0", "--max-context"),
    ("generate.py --smoke --temperature -1", "--temperature"),
    ("generate.py --smoke --policy sometimes", "bad policy"),
    # issue 20: each of these was a wrong run, a hang, a traceback or a wrong message
    ("train_svi.py --smoke --set train.steps=3 --set train.steps=4", "set twice"),
    ("train_svi.py --smoke --set train.steps=3 train.steps=4", "set twice"),
    ("train_svi.py --smoke --set model.vocab_size=10", "tokens are bytes"),
    ("train_svi.py --smoke --set model.block_size=1", "window 8 > block_size 1"),
    ("train_svi.py --smoke --seed 99999999999999999999", "--seed: must be in 0 .. 2**63 - 1"),
    ("generate.py --smoke --prompt-file /dev/zero", "not a regular file"),
    ("generate.py --smoke --prompt-file experiments", "is a folder"),
    ("generate.py --smoke --stats-png noext", "give a .png file"),
    ("generate.py --smoke --stats-png experiments/", "give a .png file"),
    ("generate.py --smoke --stats-png /no/such/s.png", "/no/such is not a folder"),
    ("train_svi.py --smoke --data synthetic:nosuch", "unknown synthetic task"),
    ("evaluate.py --checkpoint experiments", "experiments is a folder, not a checkpoint file"),
    ("train_svi.py --resume README.md", "resume takes the run folder, not a file"),
]


# run as a user runs them (a fresh interpreter each, 2 s of imports): one per way of refusing —
# argparse's own error, a UsageError, a missing file, a script in a subfolder
AS_A_USER = [
    "train_svi.py --smoke --prior bogus",
    "evaluate.py --smoke --repeats 0",
    "uncertainty.py --checkpoint " + MISSING,
    "phase1/run.py --budget smoke --jobs 0",
]


@pytest.mark.parametrize("command,message", BAD_INPUTS, ids=[c for c, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2(command, message, run_main, one_line_error):
    # in this process, through the script's main_guard: the same exit code and stderr
    proc = run_main(*command.split(" "))
    one_line_error(proc)
    assert message in proc.stderr


@pytest.mark.parametrize("command", AS_A_USER)
def test_bad_input_is_one_line_exit_2_from_the_command_line(command, run_script, one_line_error):
    message = dict(BAD_INPUTS)[command]
    proc = run_script(*command.split(" "))
    one_line_error(proc)
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("content", [None, b"", b"too short"])
def test_unusable_corpus_is_one_line_exit_2(content, corpus_file, run_script, one_line_error):
    proc = run_script("train_svi.py", "--smoke", "--data", str(corpus_file(content)))
    one_line_error(proc)


BAD_SETTINGS = [  # train_svi.py flags -> what the one-line error says
    ("--kl-weight -1", "kl_weight must be finite and >= 0"),
    ("--batch-size 0", "batch_size must be >= 1"),
    ("--lr -1", "lr must be finite and > 0"),
    ("--lr inf", "lr must be finite and > 0, got inf"),
    ("--lr nan", "lr must be finite and > 0, got nan"),
    ("--seed -1", "--seed: must be in 0 .. 2**63 - 1, got -1"),
    ("--steps 0", "steps must be >= 1"),
    ("--steps -5", "steps must be >= 1, got -5"),
]


@pytest.mark.parametrize("flags,message", BAD_SETTINGS, ids=[f for f, _ in BAD_SETTINGS])
def test_bad_training_settings_write_nothing(flags, message, tmp_path, run_main, one_line_error):
    proc = run_main("train_svi.py", "--smoke", "--out", str(tmp_path / "run"), *flags.split())
    one_line_error(proc)
    assert message in proc.stderr and not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("script", ["evaluate.py", "train_svi.py"])
def test_cuda_without_a_gpu_is_one_line(script, run_script, one_line_error):
    proc = run_script(script, "--smoke", "--device", "cuda")
    one_line_error(proc)
    assert "cuda" in proc.stderr.lower()


@pytest.mark.parametrize("kind", list(BAD))
def test_an_unusable_checkpoint_is_one_line(kind, tmp_path, run_main, one_line_error):
    path = bad_checkpoint(kind, tmp_path / "ck.pt")
    proc = run_main("evaluate.py", "--checkpoint", str(path))
    one_line_error(proc)
    assert BAD[kind] in proc.stderr and str(path) in proc.stderr
    assert not (tmp_path / "MARKER").exists()


def test_a_checkpoint_path_with_a_tilde_is_the_home_folder(smoke_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    checkpoint = smoke_run / "run" / "checkpoint.pt"
    (tmp_path / "ck.pt").write_bytes(checkpoint.read_bytes())
    assert read_checkpoint("~/ck.pt").step == read_checkpoint(checkpoint).step


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A finished smoke run's folder, trained on a copy of a corpus file."""
    root = tmp_path_factory.mktemp("smoke")
    corpus = root / "corpus.txt"
    corpus.write_bytes(bytes(range(256)) * 100)
    proc = subprocess.run(
        [sys.executable, "experiments/train_svi.py", "--smoke", "--no-progress"]
        + ["--data", str(corpus), "--out", str(root / "run")],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert proc.returncode == 0, proc.stderr
    return root


def test_a_folder_holding_a_run_is_refused(smoke_run, run_script, one_line_error):
    run = str(smoke_run / "run")
    proc = run_script("train_svi.py", "--smoke", "--out", run)
    one_line_error(proc)
    assert "--resume" in proc.stderr and "--overwrite" in proc.stderr
    proc = run_script("train_svi.py", "--resume", run)
    one_line_error(proc)
    assert "finished run" in proc.stderr


def test_evaluating_on_changed_data_is_refused_unless_named(smoke_run, run_script, one_line_error):
    checkpoint = str(smoke_run / "run" / "checkpoint.pt")
    other = smoke_run / "other.txt"
    other.write_bytes(bytes(range(255, -1, -1)) * 100)
    corpus = smoke_run / "corpus.txt"
    original = corpus.read_bytes()
    corpus.write_bytes(other.read_bytes())
    try:
        proc = run_script("evaluate.py", "--checkpoint", checkpoint, "--batches", "1")
        one_line_error(proc)
        assert "has changed since training" in proc.stderr and "--data" in proc.stderr
    finally:
        corpus.write_bytes(original)
    proc = run_script("evaluate.py", "--checkpoint", checkpoint, "--data", str(other))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("warning:") and "is not the training data" in proc.stderr


def test_sigterm_saves_and_resume_finishes(tmp_path, run_script):
    out = tmp_path / "run"
    cmd = [sys.executable, "experiments/train_svi.py", "--smoke", "--no-progress"]
    cmd += ["--steps", "30", "--out", str(out)]
    root = os.path.dirname(os.path.dirname(__file__))
    proc = subprocess.Popen(cmd, cwd=root, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    while proc.poll() is None and not (metrics.is_file() and metrics.read_text()):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.startswith("error: interrupted by SIGTERM after step") and stderr.count("\n") == 1
    assert f"--resume {out}" in stderr
    step = read_checkpoint(out / "checkpoint.pt").step
    assert 0 < step < 30
    proc = run_script("evaluate.py", "--checkpoint", str(out / "checkpoint.pt"), "--batches", "1")
    assert f"interrupted run (step {step} of 30)" in proc.stdout
    proc = run_script("train_svi.py", "--resume", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert read_checkpoint(out / "checkpoint.pt").finished


def test_a_prompt_fifo_is_refused_not_waited_on(tmp_path, run_script, one_line_error):
    fifo = tmp_path / "prompt"
    os.mkfifo(fifo)  # nobody writes: reading it would block forever
    proc = run_script("generate.py", "--smoke", "--prompt-file", str(fifo), timeout=60)
    one_line_error(proc)
    assert "not a regular file" in proc.stderr


def test_repeated_set_flags_accumulate(tmp_path, run_main):
    out = tmp_path / "run"
    flags = ["--set", "train.steps=3", "--set", "train.batch_size=2", "model.dropout=0.1"]
    proc = run_main("train_svi.py", "--smoke", "--out", str(out), *flags)
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["train"]["steps"], config["train"]["batch_size"]) == (3, 2)
    assert config["model"]["dropout"] == 0.1


def test_a_checkpoint_is_enough_once_the_training_file_is_gone(tmp_path, run_main):
    """generate.py needs nothing but the checkpoint; evaluate.py and uncertainty.py run on the
    --data they are given."""
    corpus, other = tmp_path / "corpus.txt", tmp_path / "other.txt"
    corpus.write_bytes(bytes(range(256)) * 100)
    other.write_bytes(bytes(range(255, -1, -1)) * 100)
    out = tmp_path / "run"
    assert (
        run_main("train_svi.py", "--smoke", "--data", str(corpus), "--out", str(out)).returncode
        == 0
    )
    corpus.unlink()
    checkpoint = str(out / "checkpoint.pt")
    proc = run_main(
        "generate.py", "--checkpoint", checkpoint, "--prompt", "ab", "--max-new-tokens", "3"
    )
    assert proc.returncode == 0, proc.stderr
    for script in ("evaluate.py", "uncertainty.py"):
        flags = ["--checkpoint", checkpoint, "--data", str(other), "--out", str(tmp_path / script)]
        proc = run_main(script, *flags)
        assert proc.returncode == 0, proc.stderr


def test_smoke_runs_leave_no_temporary_folder(tmp_path):
    """generate.py --smoke trains into a temporary folder and removes it on exit; a prompt that
    is not UTF-8 is generated from as the bytes given."""
    cmd = [sys.executable, "experiments/generate.py", "--smoke", "--max-new-tokens", "2"]
    cmd += ["--prompt", os.fsdecode(b"\xff\xfeab")]
    root = os.path.dirname(os.path.dirname(__file__))
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert [p for p in tmp_path.iterdir() if p.name.startswith("smoke-")] == []


def test_ctrl_c_during_generation_keeps_what_was_written(tmp_path, ctrl_c_reaches_python):
    """SIGINT while streaming a long generation: the bytes so far stay printed, one closing line
    says how many, exit code 130."""
    cmd = [sys.executable, "-u", "experiments/generate.py", "--smoke", "--max-new-tokens", "100000"]
    root = os.path.dirname(os.path.dirname(__file__))
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = proc.stdout.read(len("import ") + 50)  # the prompt, then generated text
    proc.send_signal(signal.SIGINT)
    rest, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert head.startswith(b"import ") and b"Traceback" not in stderr
    closing = rest.decode("utf-8", errors="replace").strip().splitlines()[-1]
    written = int(closing.removeprefix("[interrupted after ").split()[0])
    # the text shows a byte that is not UTF-8 as U+FFFD (3 bytes): fewer bytes than were read
    assert closing.endswith("of 100000 bytes]") and 17 <= written < 100000
