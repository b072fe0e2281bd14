"""Every script refuses bad input the same way: one `error: ...` line on stderr, exit code 2,
no traceback (`experiments/common.py`)."""

import pytest

MISSING = "/no/such/file"
BAD_INPUTS = [
    ("train_svi.py --smoke --data " + MISSING, "not found"),
    ("train_svi.py --smoke --prior sparse-dirichlet --kappa 9", "kappa / M < 1"),
    ("train_svi.py --smoke --prior bogus", "invalid choice"),
    ("evaluate.py --checkpoint " + MISSING, "not found"),
    ("evaluate.py", "--checkpoint is required"),
    ("evaluate.py --smoke --policy sometimes", "bad policy"),
    ("evaluate.py --smoke --repeats 0", "--repeats"),
    ("uncertainty.py --checkpoint " + MISSING, "not found"),
    ("uncertainty.py --smoke --data " + MISSING, "not found"),
    ("uncertainty.py --smoke --samples 0", "--samples"),
    ("bench_step.py --smoke --steps 0", "--steps"),
    ("elbo_variance.py --smoke --repeats 1", "--repeats"),
    ("bench_hard_routing.py --smoke --batch 0", "--batch"),
    ("bench_hard_routing.py --smoke --mix 50/60/0", "--mix"),
    ("bench_hard_routing.py --smoke --mix learned:no/such/run", "--mix"),
    ("bench_hard_routing.py --smoke --T 0", "--T"),
    ("mqar_study.py --smoke --tag t --models bogus", "unknown prior"),
    ("mqar_study.py --smoke --tag t --models cost-penalised@x", "not a number"),
    ("mqar_study.py --smoke --tag t --set train.nope=1", "SECTION.FIELD=VALUE"),
    ("mqar_study.py --smoke --tag t --seeds 0", "--seeds"),
    ("mqar_study.py --smoke --tag a/b", "--tag"),
    ("mqar_study.py --smoke --tag t --combine nosuchtag --results /tmp", "cannot read"),
    ("decision_price.py --smoke --targets 1.5", "--targets"),
    ("decision_price.py --samples 5", "--samples"),
    ("phase1/run.py --budget smoke --models bogus", "unknown model"),
    ("phase1/run.py --budget smoke --jobs 0", "--jobs"),
]


@pytest.mark.parametrize("command,message", BAD_INPUTS, ids=[c for c, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2(command, message, run_script, one_line_error):
    proc = run_script(*command.split())
    one_line_error(proc)
    assert message in proc.stderr


@pytest.mark.parametrize("content", [None, b"", b"too short"])
def test_unusable_corpus_is_one_line_exit_2(content, corpus_file, run_script, one_line_error):
    proc = run_script("train_svi.py", "--smoke", "--data", str(corpus_file(content)))
    one_line_error(proc)
