"""TorchScript's graph-executor optimisations, switched off while mlmm drives a CPU Context.

openmm-torch runs a TorchForce's module through TorchScript's profiling graph executor. After
two profiling calls the executor compiles an optimised plan, and if any tensor that requires
grad was seen with grad enabled it rewrites the whole graph into differentiable subgraphs,
each of which detaches its inputs and records an autograd node on every call, whether or not
grad is on when the call runs. The mixed System's ML TorchForce declares
``addEnergyParameterDerivative("lambda_ml")``, so openmm-torch passes lambda with
``requires_grad`` and ``lambda * E`` is such a use: the energy-only AIMNet2 model on toluene
then ran as 80 differentiable subgraphs and its TorchForce call took 6.29 ms against 5.72 ms
without the derivative (toluene-water, 734 particles, CPU platform, medians of 80 interleaved
rounds). The executor's other optimisations bring nothing on the CPU (the PyTorch wheels have
no CPU fuser), and the unoptimised plan runs the same graph as frozen, with autograd recording
only where grad is on: there the call took 5.80 ms with the derivative and 5.70 ms without.

:func:`unoptimized_torchscript` switches the optimisations off (``torch.jit.optimized_execution(False)``,
a per-thread setting, restored on exit) around the dynamics mlmm runs on the CPU and Reference
platforms. GPU platforms keep them: there the executor can also fuse elementwise kernels (not
measured without them).

Create Contexts outside the ``with`` block. openmm-torch freezes a TorchForce's module when a
Context is created, and freezing with the optimisations off leaves the calls into submodules
in place after deleting the submodules' methods: the first evaluation then fails with
"Couldn't find method: 'forward'".
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from .platforms import CPU_PLATFORMS


@contextmanager
def unoptimized_torchscript(platform_name: str):
    """Run the body with TorchScript's graph-executor optimisations off when ``platform_name`` is a CPU platform."""
    if platform_name not in CPU_PLATFORMS:
        yield
        return
    with torch.jit.optimized_execution(False):
        yield
