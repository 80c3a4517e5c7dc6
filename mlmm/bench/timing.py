"""Wall-clock timing of integrator steps, force evaluations and bare model calls.

Every timer returns milliseconds for one unit of work (one integrator step, one force
evaluation, one model call). Work that a device may queue asynchronously is finished before
the clock stops: an OpenMM ``getState`` after the steps, ``torch.cuda.synchronize`` after
model calls on a GPU.
"""

from __future__ import annotations

import statistics
import time

import openmm
import torch

#: a State with the energy of no force group: cheap, but it waits until queued GPU work is done
_NO_GROUPS = 0


def finish(context: openmm.Context) -> None:
    """Wait for every step queued on ``context`` (a no-op on the CPU and Reference platforms)."""
    context.getState(getEnergy=True, groups=_NO_GROUPS)


def ms_per_step(context: openmm.Context, steps: int) -> float:
    """Milliseconds per integrator step over ``steps`` steps of ``context``'s integrator."""
    integrator = context.getIntegrator()
    start = time.perf_counter()
    integrator.step(int(steps))
    finish(context)
    return 1e3 * (time.perf_counter() - start) / steps


def ms_per_evaluation(context: openmm.Context, groups: int, evaluations: int) -> float:
    """Milliseconds per energy-and-force evaluation of the force groups in the bit mask ``groups``."""
    start = time.perf_counter()
    for _ in range(int(evaluations)):
        context.getState(getEnergy=True, groups=int(groups))
    return 1e3 * (time.perf_counter() - start) / evaluations


def model_call(region_model, positions: torch.Tensor) -> torch.Tensor:
    """Energy (kJ/mol) and forces (kJ/mol/nm) of the region at ``positions`` (n, 3) nm: one model call.

    The forces come from one autograd pass, as :class:`mlmm.ml_force.MLRegionForce`
    computes them; returns the forces.
    """
    leaf = positions.detach().requires_grad_(True)
    energy = region_model(leaf)["energy"]
    (gradient,) = torch.autograd.grad([energy], [leaf])
    return -gradient


def ms_per_model_call(region_model, positions: torch.Tensor, calls: int) -> float:
    """Milliseconds per :func:`model_call` over ``calls`` calls."""
    cuda = positions.device.type == "cuda"
    start = time.perf_counter()
    for _ in range(int(calls)):
        model_call(region_model, positions)
    if cuda:
        torch.cuda.synchronize(positions.device)
    return 1e3 * (time.perf_counter() - start) / calls


def median(samples) -> float:
    return float(statistics.median(samples))
