"""Wall-clock timing of integrator steps, force evaluations and bare model calls.

Every timer returns a :class:`Timing`: wall-clock and CPU milliseconds for one unit of work
(one integrator step, one force evaluation, one model call). The CPU time is summed over all
threads of this process; on a machine shared with other work it shows what the work itself
costs when the wall time is stretched by waiting for a core. Work that a device may queue
asynchronously is finished before the clock stops: an OpenMM ``getState`` after the steps,
``torch.cuda.synchronize`` after model calls on a GPU.
"""

from __future__ import annotations

import statistics
import time
from typing import NamedTuple

import openmm
import torch


class Timing(NamedTuple):
    """Milliseconds per unit of work: wall clock and CPU (all threads of the process)."""

    wall_ms: float
    cpu_ms: float


class _Clock:
    """Wall and process CPU time from construction to :meth:`per`."""

    def __init__(self):
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def per(self, units: int) -> Timing:
        return Timing(1e3 * (time.perf_counter() - self.wall) / units, 1e3 * (time.process_time() - self.cpu) / units)


#: a State with the energy of no force group: cheap, but it waits until queued GPU work is done
_NO_GROUPS = 0


def finish(context: openmm.Context) -> None:
    """Wait for every step queued on ``context`` (a no-op on the CPU and Reference platforms)."""
    context.getState(getEnergy=True, groups=_NO_GROUPS)


def time_steps(context: openmm.Context, steps: int) -> Timing:
    """Time per integrator step over ``steps`` steps of ``context``'s integrator."""
    integrator = context.getIntegrator()
    clock = _Clock()
    integrator.step(int(steps))
    finish(context)
    return clock.per(steps)


def time_evaluations(context: openmm.Context, groups: int, evaluations: int) -> Timing:
    """Time per energy evaluation of the force groups in the bit mask ``groups``.

    Force groups compute their forces along with the energy (a TorchForce always does).
    """
    clock = _Clock()
    for _ in range(int(evaluations)):
        context.getState(getEnergy=True, groups=int(groups))
    return clock.per(evaluations)


def model_call(region_model, positions: torch.Tensor) -> torch.Tensor:
    """Energy (kJ/mol) and forces (kJ/mol/nm) of the region at ``positions`` (n, 3) nm: one model call.

    The forces come from one autograd pass, as :class:`mlmm.ml_force.MLRegionForce`
    computes them; returns the forces.
    """
    leaf = positions.detach().requires_grad_(True)
    energy = region_model(leaf)["energy"]
    (gradient,) = torch.autograd.grad([energy], [leaf])
    return -gradient


def time_model_calls(region_model, positions: torch.Tensor, calls: int) -> Timing:
    """Time per :func:`model_call` over ``calls`` calls."""
    clock = _Clock()
    for _ in range(int(calls)):
        model_call(region_model, positions)
    if positions.device.type == "cuda":
        torch.cuda.synchronize(positions.device)
    return clock.per(calls)


def median(samples) -> float:
    return float(statistics.median(samples))
