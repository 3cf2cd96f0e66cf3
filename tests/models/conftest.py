import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models train fastest on one thread; more only contend on a busy machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
