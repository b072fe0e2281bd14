"""The notebooks are committed without outputs (make test executes them through nbmake)."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_is_a_notebook():
    assert [p.name for p in NOTEBOOKS] == ["inspect_posterior.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_outputs_are_stripped(path):
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None, cell["source"][:80]


def test_a_checkpoint_without_a_posterior_is_refused_in_plain_words(tmp_path, monkeypatch):
    """The notebook's first cells, run on a `none`-prior checkpoint, stop with one sentence
    (before: a failure deep in cell 9, "prior 'none' is improper")."""
    from pyro_meta_attention.config import smoke_config
    from pyro_meta_attention.training.svi import fit

    fit(smoke_config(prior={"name": "none"}, train={"steps": 2}), out=tmp_path, progress=False)
    monkeypatch.setenv("PMA_CHECKPOINT", str(tmp_path / "checkpoint.pt"))
    cells = json.loads(NOTEBOOKS[0].read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    scope: dict = {}
    exec(code[0], scope)
    with pytest.raises(ValueError, match="prior 'none', whose routing has no posterior"):
        exec(code[1], scope)
