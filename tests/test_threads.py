"""PyTorch threads for simulations on the CPU (mlmm.threads)."""

from __future__ import annotations

import os
import subprocess
import sys

import openmm
import pytest
import torch

from mlmm import InputError
from mlmm.freeenergy.protocol import Protocol
from mlmm.freeenergy.sampling import create_context
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


def test_free_energy_contexts_follow_the_same_rule(monkeypatch):
    """A free-energy task with 2 OpenMM threads still gives PyTorch one on the CPU."""
    monkeypatch.delenv(TORCH_THREADS_VARIABLE, raising=False)
    torch.set_num_threads(2)
    system = openmm.System()
    system.addParticle(1.0)
    protocol = Protocol.load("smoke").replace(platform="CPU", threads=2)
    context = create_context(system, openmm.VerletIntegrator(0.001), protocol)
    assert context.getPlatform().getPropertyValue(context, "Threads") == "2"
    assert torch.get_num_threads() == 1


def test_import_sets_passive_waiting_with_a_short_spin():
    """``import mlmm`` sets GNU OpenMP's wait policy and spin before torch loads, unless the user set them."""
    code = "import os, mlmm; print(os.environ['OMP_WAIT_POLICY'], os.environ['GOMP_SPINCOUNT'])"
    environment = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    default = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True)
    assert default.stdout.split() == ["PASSIVE", "10000"]
    environment["GOMP_SPINCOUNT"] = "0"
    chosen = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True)
    assert chosen.stdout.split() == ["PASSIVE", "0"]
