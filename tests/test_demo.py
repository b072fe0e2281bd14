"""The shipped demo checkpoint (pyro_meta_attention/demo/): its sha256 is checked at load, and
its routing is learned: MQAR queries to full attention in some layer, the other tokens local."""

import pytest
import torch

import pyro_meta_attention.demo as demo
from pyro_meta_attention.data.mqar import QUERY
from pyro_meta_attention.data.sources import data_for, held_out_batches
from pyro_meta_attention.mechanisms import MECHANISMS
from pyro_meta_attention.training.checkpoint import CheckpointError


def test_the_shipped_demo_routes_queries_to_full():
    config, model, guide = demo.load_demo()
    assert demo.demo_path().stat().st_size < 1_000_000
    batch = held_out_batches(data_for(config), config, batches=1)[0]
    with torch.no_grad():
        route = guide.posterior_mean(batch.x).argmax(-1)  # [B, T, L]
    full, local = MECHANISMS.index("full"), MECHANISMS.index("local")
    query = batch.classes == QUERY
    to_full = [
        float((route[..., l][query] == full).double().mean()) for l in range(route.shape[-1])
    ]
    assert max(to_full) > 0.9, to_full  # measured 1.00 in one layer (the record's summary)
    assert float((route[~query] == local).double().mean()) > 0.9


def test_a_changed_file_is_refused(tmp_path, monkeypatch):
    for name in ("mqar-routing.pt", "mqar-routing.json"):
        (tmp_path / name).write_bytes((demo.HERE / name).read_bytes())
    monkeypatch.setattr(demo, "HERE", tmp_path)
    demo.load_demo()  # the copy is the shipped file
    data = bytearray((tmp_path / "mqar-routing.pt").read_bytes())
    data[-100] ^= 1
    (tmp_path / "mqar-routing.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is not the shipped file"):
        demo.load_demo()
    with pytest.raises(ValueError, match="unknown demo"):
        demo.load_demo("nosuch")
