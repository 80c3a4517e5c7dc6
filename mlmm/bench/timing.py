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

from ..potentials import energy_and_forces


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


def finish(context: openmm.Context) -> None:
    """Wait for every step queued on ``context`` (a no-op on the CPU and Reference platforms).

    Fetches the positions, which waits for queued GPU work and computes no forces. A State
    with an energy would evaluate force groups (if only an empty set of them), and then the
    forces an MTS integrator kept from its last slow evaluation no longer count as current:
    the next block would evaluate the ML force once more than a run does (11 evaluations in
    10 outer steps rather than 10).
    """
    context.getState(getPositions=True)


def time_steps(context: openmm.Context, steps: int, advance=None) -> Timing:
    """Time per integrator step over ``steps`` steps of ``context``'s integrator.

    ``advance(integrator, steps)``, if given, takes the steps (a
    :meth:`mlmm.threads.TorchThreadTuner.step`); by default ``integrator.step``.
    """
    integrator = context.getIntegrator()
    clock = _Clock()
    if advance is None:
        integrator.step(int(steps))
    else:
        advance(integrator, int(steps))
    finish(context)
    return clock.per(steps)


def evaluate(context: openmm.Context, groups: int = -1) -> None:
    """One energy evaluation of the force groups in the bit mask ``groups`` (all by default)."""
    context.getState(getEnergy=True, groups=int(groups))


def time_evaluations(context: openmm.Context, groups: int, evaluations: int, before=None) -> Timing:
    """Time per energy evaluation of the force groups in the bit mask ``groups``.

    Force groups compute their forces along with the energy (a TorchForce always does).
    ``before``, if given, is called untimed before each evaluation (see :func:`time_model_calls`).
    """
    return _time_each(lambda: evaluate(context, groups), evaluations, before)


def model_call(region_model, positions: torch.Tensor) -> torch.Tensor:
    """Energy (kJ/mol) and forces (kJ/mol/nm) of the region at ``positions`` (n, 3) nm: one model call.

    Computed as :class:`mlmm.ml_force.MLRegionForce` computes them
    (:func:`mlmm.potentials.energy_and_forces`); returns the forces.
    """
    return energy_and_forces(region_model, positions)[1]


def time_model_calls(region_model, positions: torch.Tensor, calls: int, before=None) -> Timing:
    """Time per :func:`model_call` over ``calls`` calls.

    ``before``, if given, is called untimed before each call. The benchmark passes an MM
    force evaluation of the system: in a run the ML force is evaluated right after the MM
    forces, which leave the caches holding the MM data rather than the model's weights, and
    a call timed after the call before it would be faster than any call in the run.
    """
    on_gpu = positions.device.type == "cuda"

    def call():
        model_call(region_model, positions)
        if on_gpu:
            torch.cuda.synchronize(positions.device)

    return _time_each(call, calls, before)


def _time_each(work, times: int, before=None) -> Timing:
    """Mean wall and CPU time of ``work()`` over ``times`` calls, each after an untimed ``before()``."""
    wall_ms = cpu_ms = 0.0
    for _ in range(int(times)):
        if before is not None:
            before()
        clock = _Clock()
        work()
        one = clock.per(1)
        wall_ms += one.wall_ms
        cpu_ms += one.cpu_ms
    return Timing(wall_ms / times, cpu_ms / times)


def median(samples) -> float:
    return float(statistics.median(samples))
