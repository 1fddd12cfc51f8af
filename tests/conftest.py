"""Test-suite settings: in CI (CI=true) hypothesis runs derandomized, so a run is repeatable;
the tests that train or run tiny models use one torch thread."""

import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


ONE_THREAD_DIRS = {"engine", "inference"}


@pytest.fixture(autouse=True)
def _one_thread(request):
    """Tiny models are slower with several threads, badly so on a loaded machine. Applies to
    the folders in ``ONE_THREAD_DIRS`` and to modules that set ``ONE_THREAD = True``."""
    if (request.path.parent.name not in ONE_THREAD_DIRS
            and not getattr(request.module, "ONE_THREAD", False)):
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
