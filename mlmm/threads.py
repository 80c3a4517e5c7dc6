"""CPU threads shared between OpenMM and PyTorch.

On OpenMM's CPU platform the MM forces run on OpenMM's thread pool (all cores by default)
and the TorchForce runs the ML model on PyTorch's intra-op threads, on the same cores, one
after the other within a step. Several PyTorch threads then only wait for cores OpenMM's
threads hold: measured on 2 cores, one AIMNet2 call on toluene took 31-62 ms with one torch
thread and 358-893 ms with two while OpenMM was busy. So mlmm gives PyTorch one thread when
the Context runs on the CPU or Reference platform; ``MLMM_TORCH_THREADS`` overrides it.
GPU platforms leave PyTorch's setting alone (the model runs on the GPU).

On a machine whose cores this run has to itself, ``MLMM_TORCH_THREADS=2`` is faster: while
the ML force is evaluated OpenMM's threads sleep, and the model's matrix products (oneDNN)
split over two cores. With the short spin that ``import mlmm`` gives PyTorch's waiting
threads (``GOMP_SPINCOUNT=10000``), an MTS outer step of toluene-water took 8.1-8.9 ms against
10.1-10.8 ms with one thread (2 cores, five benchmark runs each, 2026-12-07). With another
busy process on the same two cores the second thread waits for a core at every product: one
model call took 29.4 ms against 4.5 ms (``scripts/profile_threads.py``), hence the default.
"""

from __future__ import annotations

import os

import torch

from .errors import InputError
from .platforms import CPU_PLATFORMS

#: environment variable that sets PyTorch's intra-op threads for mlmm simulations
TORCH_THREADS_VARIABLE = "MLMM_TORCH_THREADS"


def configure_torch_threads(platform_name: str) -> int:
    """Set PyTorch's intra-op threads for a simulation on ``platform_name``; return the count."""
    requested = os.environ.get(TORCH_THREADS_VARIABLE)
    if requested is not None:
        try:
            count = int(requested)
        except ValueError:
            count = 0
        if count < 1:
            raise InputError(f"{TORCH_THREADS_VARIABLE}={requested!r} must be a positive whole number of threads.")
        torch.set_num_threads(count)
    elif platform_name in CPU_PLATFORMS:
        torch.set_num_threads(1)
    return torch.get_num_threads()
