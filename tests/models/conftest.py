import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The model tests run small convolutions; one intra-op thread wastes no time in thread
    synchronisation on a busy 2-core machine (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
