import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny models here are slower with several threads, badly so on a loaded machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
