"""Decoding tests run one torch thread: their operations are a few rows wide, so a second
thread adds only synchronisation (on the 2-core CI machine, busy with the rest of the suite,
it made single tests up to 50x slower)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
