"""The two kinds of task a free-energy calculation is made of.

- :func:`sample_window`: equilibrium Langevin dynamics in one state of a leg, evaluating
  the reduced potential u_l(x) = beta [U_l(x) + p V(x)] of *every* state l of the leg at
  each sample (what MBAR needs), and dU/dLAMBDA_ML where the System reports it.
- :func:`switch`: non-equilibrium switching along the leg (openmmtools'
  ``AlchemicalNonequilibriumLangevinIntegrator``), from equilibrium snapshots of one end
  state to the other, returning the protocol work of each trajectory.

Both are plain functions of picklable arguments and a seed, so they run the same in this
process or in a Dask worker. On a deterministic platform (Reference; CPU for non-periodic
systems) the same call gives bitwise the same numbers anywhere; the CPU platform's PME is
not bitwise reproducible, so periodic systems there reproduce only statistically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import openmm
import openmm.unit as u

from ..embedding import LAMBDA_ML
from ..errors import InputError, SimulationError
from ..forcegroups import ML_SLOW, groups_in
from ..platforms import get_platform
from ..threads import TorchThreadTuner, torch_thread_tuner
from ..torchscript_execution import unoptimized_torchscript

#: 1 bar nm^3 per particle in kJ/mol (p V term of the reduced potential)
KJ_PER_MOL_PER_BAR_NM3 = (1 * u.bar * u.nanometer**3 * u.AVOGADRO_CONSTANT_NA).value_in_unit(u.kilojoule_per_mole)


@dataclass
class WindowSamples:
    """What one equilibrium window returns.

    ``reduced_potentials[l, n]``: u_l of sample n (drawn in state ``index``), in kT.
    ``dudl[n]``: dU/dLAMBDA_ML in kJ/mol, or None when the System does not report it.
    ``snapshots``: (positions nm, box vectors nm or None) pairs, evenly spaced over the
    samples, kept to start non-equilibrium switches from.
    """

    leg: str
    index: int
    reduced_potentials: np.ndarray
    dudl: np.ndarray | None
    snapshots: list
    seconds: float
    steps: int


@dataclass
class SwitchingWork:
    """Protocol work (kT) of each non-equilibrium trajectory of one direction of a leg."""

    leg: str
    direction: str  # "forward" (states[0] -> states[-1]) or "reverse"
    work: np.ndarray
    seconds: float
    steps: int


def create_context(system: openmm.System, integrator: openmm.Integrator,
                   protocol) -> tuple[openmm.Context, TorchThreadTuner]:
    """A Context on ``protocol.platform`` using ``protocol.threads`` OpenMM CPU threads, and its thread tuner.

    Step the dynamics through the tuner: PyTorch's intra-op threads (a TorchForce on the
    CPU) follow :mod:`mlmm.threads` as in ``mlmm run``, at most as many as OpenMM's, so a task
    with the default single OpenMM thread gives PyTorch one.
    """
    platform = get_platform(protocol.platform)
    properties = {"Threads": str(protocol.threads)} if protocol.platform == "CPU" else {}
    context = openmm.Context(system, integrator, platform, properties)
    return context, torch_thread_tuner(context)


def _prepare(leg, protocol, seed: int):
    """The leg's System with a barostat where the protocol asks for one, and the pressure used (bar or None)."""
    system = leg.create_system()
    pressure = protocol.pressure if system.usesPeriodicBoundaryConditions() else None
    if pressure is not None:
        barostat = openmm.MonteCarloBarostat(pressure * u.bar, protocol.temperature * u.kelvin, protocol.barostat_interval)
        barostat.setRandomNumberSeed(seed)
        system.addForce(barostat)
    return system, pressure


def _reports_derivative(system: openmm.System, parameter: str) -> bool:
    """Whether some force declares dU/d``parameter`` (OpenMM lists every parameter, with 0 for the rest)."""
    for force in system.getForces():
        count = getattr(force, "getNumEnergyParameterDerivatives", lambda: 0)()
        if any(force.getEnergyParameterDerivativeName(i) == parameter for i in range(count)):
            return True
    return False


def integration_groups(system: openmm.System, state) -> set[int] | None:
    """The force groups dynamics in ``state`` needs, or None for all of them.

    In a mixed System the ML correction group (:data:`mlmm.forcegroups.ML_SLOW`) holds
    only terms scaled by LAMBDA_ML, so at ``lambda_ml = 0`` its energy and forces are
    exactly zero and the MM window need not evaluate the ML model at every step. It is
    still evaluated for the reduced potentials of the other states (``getState`` computes
    every group).
    """
    if getattr(state, "lambda_ml", None) != 0.0:
        return None
    groups = groups_in(system)
    return groups - {ML_SLOW} if ML_SLOW in groups else None


def _set_coordinates(context, positions, box_vectors):
    if box_vectors is not None:
        context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box_vectors])
    context.setPositions(positions)


def _reduced_potential(state: openmm.State, beta: float, pressure: float | None) -> float:
    energy = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    if pressure is not None:
        volume = state.getPeriodicBoxVolume().value_in_unit(u.nanometer**3)
        energy += pressure * volume * KJ_PER_MOL_PER_BAR_NM3
    return beta * energy


def _check_finite(value: float, leg, what: str):
    if not np.isfinite(value):
        raise SimulationError(
            f"leg {leg.name!r}: {what} is {value}; the simulation blew up. Use a shorter time step, more "
            "minimization or equilibration (protocol fields timestep, minimization_steps, equilibration_steps)."
        )


def sample_window(leg, index: int, protocol, seed: int, n_snapshots: int = 0) -> WindowSamples:
    """Sample state ``index`` of ``leg`` and evaluate all its states' reduced potentials."""
    start = time.perf_counter()
    system, pressure = _prepare(leg, protocol, seed)
    integrator = openmm.LangevinMiddleIntegrator(
        protocol.temperature * u.kelvin, protocol.friction / u.picosecond, protocol.timestep * u.picosecond
    )
    integrator.setRandomNumberSeed(seed)
    states = leg.states
    groups = integration_groups(system, states[index])
    if groups is not None:
        integrator.setIntegrationForceGroups(groups)
    context, threads = create_context(system, integrator, protocol)
    with unoptimized_torchscript(context.getPlatform().getName()):
        _set_coordinates(context, leg.positions, leg.box_vectors)
        states[index].apply_to_context(context)
        if protocol.minimization_steps:
            openmm.LocalEnergyMinimizer.minimize(context, 10.0, protocol.minimization_steps)
        context.setVelocitiesToTemperature(protocol.temperature * u.kelvin, seed)
        threads.step(integrator, protocol.equilibration_steps)

        beta = 1.0 / protocol.kT
        has_derivative = _reports_derivative(system, LAMBDA_ML)
        n = protocol.samples_per_window
        keep = set(np.linspace(0, n - 1, n_snapshots).round().astype(int).tolist()) if n_snapshots else set()
        reduced = np.empty((len(states), n))
        dudl = np.empty(n) if has_derivative else None
        snapshots = []
        for sample in range(n):
            threads.step(integrator, protocol.steps_per_sample)
            current = context.getState(getPositions=sample in keep, getParameterDerivatives=has_derivative)
            if has_derivative:
                dudl[sample] = current.getEnergyParameterDerivatives()[LAMBDA_ML]
                _check_finite(dudl[sample], leg, f"dU/d{LAMBDA_ML} in window {index}")
            if sample in keep:
                box = None
                if leg.box_vectors is not None:
                    box = current.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer)
                snapshots.append((current.getPositions(asNumpy=True).value_in_unit(u.nanometer), box))
            for other, state in enumerate(states):
                state.apply_to_context(context)
                reduced[other, sample] = _reduced_potential(context.getState(getEnergy=True), beta, pressure)
                _check_finite(reduced[other, sample], leg, f"the energy of state {other} in window {index}")
            states[index].apply_to_context(context)
    steps = protocol.equilibration_steps + n * protocol.steps_per_sample
    return WindowSamples(leg.name, index, reduced, dudl, snapshots, time.perf_counter() - start, steps)


def switch(leg, direction: str, snapshots: list, protocol, seed: int) -> SwitchingWork:
    """Switch LAMBDA_ML linearly across ``leg`` from each snapshot; protocol work in kT.

    ``direction="forward"`` goes from ``leg.states[0]`` to ``leg.states[-1]`` and expects
    snapshots of ``states[0]``; ``"reverse"`` the other way. The work of one trajectory is
    the sum of the potential-energy jumps at each lambda increment (exact, not a
    quadrature of dU/dlambda); velocities are drawn afresh for each trajectory.
    """
    from openmmtools.integrators import AlchemicalNonequilibriumLangevinIntegrator

    if direction not in ("forward", "reverse"):
        raise InputError(f"direction {direction!r} must be 'forward' or 'reverse'.")
    start_state, end_state = (leg.states[0], leg.states[-1]) if direction == "forward" else (leg.states[-1], leg.states[0])
    begin, end = float(start_state.lambda_ml), float(end_state.lambda_ml)
    t0 = time.perf_counter()
    system, _ = _prepare(leg, protocol, seed)
    integrator = AlchemicalNonequilibriumLangevinIntegrator(
        alchemical_functions={LAMBDA_ML: f"{begin} + ({end - begin})*lambda"},
        splitting="O V R H R V O", nsteps_neq=protocol.neq_steps,
        temperature=protocol.temperature * u.kelvin, collision_rate=protocol.friction / u.picosecond,
        timestep=protocol.timestep * u.picosecond,
    )
    integrator.setRandomNumberSeed(seed)
    context, threads = create_context(system, integrator, protocol)
    work = np.empty(len(snapshots))
    with unoptimized_torchscript(context.getPlatform().getName()):
        for i, (positions, box) in enumerate(snapshots):
            _set_coordinates(context, positions, box)
            start_state.apply_to_context(context)
            integrator.reset()
            context.setVelocitiesToTemperature(protocol.temperature * u.kelvin, seed + i + 1)
            threads.step(integrator, protocol.neq_steps)
            work[i] = integrator.get_protocol_work(dimensionless=True)
            _check_finite(work[i], leg, f"the {direction} switching work of trajectory {i}")
    return SwitchingWork(leg.name, direction, work, time.perf_counter() - t0, len(snapshots) * protocol.neq_steps)
