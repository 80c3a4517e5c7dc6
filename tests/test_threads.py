"""PyTorch threads for simulations on the CPU (mlmm.threads)."""

from __future__ import annotations

import pytest
import torch

from mlmm import InputError
from mlmm.threads import TORCH_THREADS_VARIABLE, configure_torch_threads


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_cpu_platforms_give_torch_one_thread(monkeypatch):
    monkeypatch.delenv(TORCH_THREADS_VARIABLE, raising=False)
    torch.set_num_threads(2)
    assert configure_torch_threads("CPU") == 1
    torch.set_num_threads(2)
    assert configure_torch_threads("CUDA") == 2  # the model runs on the GPU: left alone


def test_environment_variable_overrides(monkeypatch):
    monkeypatch.setenv(TORCH_THREADS_VARIABLE, "2")
    assert configure_torch_threads("CPU") == 2
    monkeypatch.setenv(TORCH_THREADS_VARIABLE, "zero")
    with pytest.raises(InputError, match=TORCH_THREADS_VARIABLE):
        configure_torch_threads("CPU")
