"""Integrators for difference splitting: MM every inner step, the ML correction and the PME mesh every k.

The potential of an ML/MM system is split into force groups (:mod:`mlmm.forcegroups`)::

    U = U_MM(all) - U_MM,reciprocal(all)                       MM_FAST: every inner step dt
      + lambda * [E_ML(region) + E_coupling - E_MM(region)]    ML_SLOW: every outer step k*dt
      + U_MM,reciprocal(all)                                   MM_SLOW: every outer step k*dt

The fast group keeps the MM force field, region included, so the stiff bond and angle
vibrations of the region are integrated at the inner step by the cheap MM terms; the slow
groups hold the smooth difference between ML and MM, which is expensive to evaluate but
varies slowly, and the reciprocal space of the MM Coulomb sum (the PME mesh), the smoothest
MM term, which multiple time stepping in MD codes commonly evaluates at the outer step. With
``k = 1`` the ordinary single-step integrators are used and every group is evaluated every
step.

- ``ensemble="nvt"``: ``LangevinMiddleIntegrator`` (k = 1) or, for k > 1,
  :class:`MTSLangevinMiddleIntegrator`: BAOAB-RESPA (the thermostat acts at every inner
  step) with OpenMM's native ``LangevinMiddleIntegrator`` for the inner steps, and both slow
  groups evaluated together, once per outer step. With a barostat (``constant_pressure=True``)
  OpenMM's ``MTSLangevinIntegrator`` is used instead (see the class for why).
- ``ensemble="nve"``: ``VerletIntegrator`` (k = 1) or ``MTSIntegrator`` (velocity-Verlet
  RESPA, Tuckerman, Berne and Martyna, J. Chem. Phys. 97, 1990 (1992)), which is
  symplectic and time reversible, so its total energy shows no systematic drift.

OpenMM's ``MTSIntegrator`` and ``MTSLangevinIntegrator`` kick with each group in a step of its
own, and a step finds the forces of the previous one valid only for the same group: per outer
step they evaluate the ML correction once, the reciprocal space twice and the fast group k + 1
times (counted at k = 2), where :class:`MTSLangevinMiddleIntegrator` evaluates them once, once
and k times.

Every integrator advances time by the outer step ``k * inner_timestep`` per ``step(1)``.
"""

from __future__ import annotations

import numbers
import warnings

import openmm
import openmm.unit as u

from .errors import InputError, StabilityWarning
from .forcegroups import ML_SLOW, MM_FAST, MM_SLOW, SLOW_GROUPS
from .units import value_in

#: Default inner (MM) time step in fs and MTS factor k, chosen from the stability study
#: (``mlmm stability``; table in the README): on toluene-water an outer step of 4 fs matched
#: k = 1 in temperature, bond-length deviations and NVE drift for both embeddings, while
#: 6 fs (k = 3) and 8 fs (k = 4, with or without HMR) ended in NaN.
DEFAULT_INNER_TIMESTEP_FS = 2.0
DEFAULT_MTS_FACTOR = 2
#: The longest outer step (fs) stable in every configuration of the stability study: 4 fs
#: held for 100 ps in both embeddings, with 1 or 2 fs inner steps and with or without HMR,
#: while all 6 fs configurations ended in NaN after 2-31 ps of NVT (toluene-water).
LONGEST_STABLE_OUTER_TIMESTEP_FS = 4.0

#: ensembles :func:`make_integrator` understands (a barostat, added to the System, makes NVT into NPT)
ENSEMBLES = ("nvt", "nve")
_ALLOWED_GROUPS = (MM_FAST, ML_SLOW, MM_SLOW)
_MAX_SEED = 2**31 - 2


def make_integrator(
    temperature=300.0 * u.kelvin,
    friction=1.0 / u.picosecond,
    inner_timestep=2.0 * u.femtosecond,
    mts_factor: int = 1,
    ensemble: str = "nvt",
    seed: int | None = None,
    constant_pressure: bool = False,
) -> openmm.Integrator:
    """Return the integrator for difference splitting with MTS factor ``k = mts_factor``.

    Parameters
    ----------
    temperature : K (NVT only)
    friction : 1/ps, the Langevin collision rate (NVT only; 0 gives deterministic dynamics)
    inner_timestep : ps, the step of the fast (MM) group; the integrator's step is ``k`` times it
    mts_factor : k, the number of inner steps per evaluation of the slow (ML) group, k >= 1
    ensemble : ``"nvt"`` (Langevin) or ``"nve"`` (velocity Verlet)
    seed : random seed of the Langevin noise; None draws one at random
    constant_pressure : True when the System holds a Monte Carlo barostat (NVT with MTS then
        uses ``MTSLangevinIntegrator``, whose volume moves see the ML correction)
    """
    temperature_k = value_in(temperature, u.kelvin, "temperature")
    friction_per_ps = value_in(friction, u.picosecond**-1, "friction")
    dt_ps = value_in(inner_timestep, u.picosecond, "inner_timestep")
    if ensemble not in ENSEMBLES:
        raise InputError(f"ensemble = {ensemble!r} is unknown; choose one of {', '.join(ENSEMBLES)}.")
    if not _is_int(mts_factor) or mts_factor < 1:
        raise InputError(f"mts_factor = {mts_factor!r} must be an integer k >= 1 (1: ML every step).")
    if not dt_ps > 0:
        raise InputError(f"inner_timestep = {dt_ps} ps must be positive, e.g. 0.002 ps (2 fs).")
    if ensemble == "nvt":
        if not temperature_k > 0:
            raise InputError(f"temperature = {temperature_k} K must be positive, e.g. 300 K.")
        if not friction_per_ps >= 0:
            raise InputError(f"friction = {friction_per_ps} /ps must be >= 0, e.g. 1 /ps.")
    if seed is not None and (not _is_int(seed) or not 0 <= seed <= _MAX_SEED):
        raise InputError(f"seed = {seed!r} must be an integer in 0..{_MAX_SEED} or None (random).")

    k = int(mts_factor)
    # ML_SLOW outermost: its kick closes an outer step last, so the next one opens with it cached
    groups = [(ML_SLOW, 1), (MM_SLOW, 1), (MM_FAST, k)]
    if ensemble == "nve":
        if k == 1:
            return openmm.VerletIntegrator(dt_ps)
        return openmm.MTSIntegrator(k * dt_ps, groups)
    temperature_q = temperature_k * u.kelvin
    if k == 1:
        integrator = openmm.LangevinMiddleIntegrator(temperature_q, friction_per_ps, dt_ps)
    elif not constant_pressure:
        integrator = MTSLangevinMiddleIntegrator(temperature_k, friction_per_ps, dt_ps, k)
    else:
        # plain floats in ps and 1/ps: MTSLangevinIntegrator combines friction*dt itself
        integrator = openmm.MTSLangevinIntegrator(temperature_q, friction_per_ps, k * dt_ps, groups)
    if seed is not None:
        # OpenMM treats seed 0 as "pick one at random"; shift by one so every seed is reproducible
        integrator.setRandomNumberSeed(int(seed) + 1)
    return integrator


class MTSLangevinMiddleIntegrator(openmm.CompoundIntegrator):
    """BAOAB-RESPA with OpenMM's native ``LangevinMiddleIntegrator`` for the inner steps.

    One ``step(1)`` is an outer step of ``k * inner_timestep``::

        kick(slow, outer/2)  [LangevinMiddle step of MM_FAST, inner_timestep] x k  kick(slow, outer/2)

    The kicks ``v += (k dt / 2) f_slow / m`` (then velocity constraints), with ``f_slow`` the
    forces of both slow groups (ML_SLOW and MM_SLOW, evaluated together: the kick's integration
    force groups), are a one-line ``CustomIntegrator`` with step size 0, so they move neither
    positions nor time. The closing kick's forces are still valid for the next opening kick,
    so the slow groups are evaluated once per outer step. This is
    the dynamics of OpenMM's ``MTSLangevinIntegrator`` (the same positions for the same
    noise), with LangevinMiddle's convention for the velocities: they are offset by half a
    fast kick, ``v - (dt/2) f_fast/m``, just as LangevinMiddle's are from velocity Verlet's.
    Between steps the velocities are those after the closing slow half kick; with a stiff slow
    group their kinetic temperature reads low (2% at 8 fs with a dipeptide's torsions slow,
    tests/test_splitting.py) while the sampled configurations are unaffected.
    ``MTSLangevinIntegrator`` is a ``CustomIntegrator`` that the CPU platform runs through
    its single-threaded per-degree-of-freedom interpreter; this one runs the inner steps in
    OpenMM's compiled kernels, at the cost of plain LangevinMiddle steps (docs/benchmarks.md, *What made it faster*).

    Not for constant pressure: a ``MonteCarloBarostat`` evaluates the energy of the current
    integrator's integration force groups, which during the inner steps are MM_FAST only,
    so its volume moves would ignore the ML correction and the PME mesh. :func:`make_integrator` uses
    ``MTSLangevinIntegrator`` when ``constant_pressure=True``.

    The context's step count advances by k + 2 per outer step (every sub-integrator
    counts); :func:`mlmm.run` keeps its own count of outer steps. Between steps the current
    sub-integrator is a third one that never steps: ``setIntegrationForceGroups`` sets its
    groups, those the energy minimizer sees (all by default); the inner steps always integrate
    MM_FAST and the kicks the slow groups.
    """

    def __init__(self, temperature_k: float, friction_per_ps: float, inner_timestep_ps: float, k: int):
        super().__init__()
        self.k = int(k)
        self.inner_timestep_ps = float(inner_timestep_ps)
        inner = openmm.LangevinMiddleIntegrator(temperature_k * u.kelvin, friction_per_ps / u.picosecond,
                                                inner_timestep_ps * u.picosecond)
        inner.setIntegrationForceGroups({MM_FAST})
        kick = openmm.CustomIntegrator(0.0)
        kick.addGlobalVariable("half_outer", 0.5 * self.k * inner_timestep_ps)
        # "f": the forces of the integration force groups, all slow groups in one evaluation
        # (a CustomIntegrator step cannot combine f1 and f2, and two steps would evaluate twice)
        kick.setIntegrationForceGroups(set(SLOW_GROUPS))
        kick.addComputePerDof("v", "v + half_outer*f/m")
        kick.addConstrainVelocities()
        self._inner_index = self.addIntegrator(inner)
        self._kick_index = self.addIntegrator(kick)
        self._between_index = self.addIntegrator(openmm.CustomIntegrator(0.0))
        self.setCurrentIntegrator(self._between_index)

    @property
    def inner(self) -> openmm.LangevinMiddleIntegrator:
        """The integrator of the inner steps (temperature, friction, seed)."""
        return self.getIntegrator(self._inner_index)

    def step(self, steps: int) -> None:
        """Advance ``steps`` outer steps."""
        for _ in range(int(steps)):
            self.setCurrentIntegrator(self._kick_index)
            super().step(1)
            self.setCurrentIntegrator(self._inner_index)
            super().step(self.k)
            self.setCurrentIntegrator(self._kick_index)
            super().step(1)
        self.setCurrentIntegrator(self._between_index)

    def getStepSize(self):
        """The outer step, k times the inner step."""
        return self.k * self.inner_timestep_ps * u.picosecond

    def setRandomNumberSeed(self, seed: int) -> None:
        """Seed the Langevin noise of the inner steps.

        The other sub-integrators take the same seed: the Reference platform seeds one
        process-wide generator from every sub-integrator as the Context is created, and one left
        at seed 0 would reseed it at random after the inner integrator.
        """
        for index in range(self.getNumIntegrators()):
            self.getIntegrator(index).setRandomNumberSeed(seed)

    def getRandomNumberSeed(self) -> int:
        return self.inner.getRandomNumberSeed()

    def setIntegrationForceGroups(self, groups) -> None:
        self.getIntegrator(self._between_index).setIntegrationForceGroups(groups)


def warn_if_outer_timestep_unstable(inner_timestep_ps: float, mts_factor: int) -> None:
    """Warn (:class:`~mlmm.errors.StabilityWarning`) when an ML/MM outer step exceeds the stable 4 fs.

    The warning names the outer step ``mts_factor * inner_timestep_ps`` and settings within
    :data:`LONGEST_STABLE_OUTER_TIMESTEP_FS`; the run itself is left to go on, since a
    region with softer vibrations than toluene's ring may tolerate more (``mlmm stability``
    measures it for a given system).
    """
    inner_fs = round(1e3 * inner_timestep_ps, 6)
    outer_fs = inner_fs * mts_factor
    if outer_fs <= LONGEST_STABLE_OUTER_TIMESTEP_FS:
        return
    if inner_fs <= LONGEST_STABLE_OUTER_TIMESTEP_FS:
        advice = f"use k = {int(LONGEST_STABLE_OUTER_TIMESTEP_FS // inner_fs)} or less at this inner step"
    else:
        advice = f"use an inner step of {DEFAULT_INNER_TIMESTEP_FS:g} fs with k = {DEFAULT_MTS_FACTOR} (the default)"
    warnings.warn(
        f"an outer step of {outer_fs:g} fs (k = {mts_factor} x {inner_fs:g} fs) exceeds "
        f"{LONGEST_STABLE_OUTER_TIMESTEP_FS:g} fs, the longest that was stable in the stability study: every 6 fs "
        f"configuration of toluene-water ended in NaN after 2-31 ps (the ML correction resonates with the "
        f"ring's C-C vibrations); {advice}, or measure this system with `mlmm stability`.",
        StabilityWarning, stacklevel=3)


def check_force_groups(system: openmm.System) -> None:
    """Raise :class:`InputError` unless every force is in ``MM_FAST``, ``ML_SLOW`` or ``MM_SLOW``.

    The MTS integrators evaluate only those groups: a force in any other group would be
    silently ignored by them. A ``NonbondedForce`` may send its reciprocal space to any of
    them (or follow its own group, -1).
    """
    problems = []
    for index, force in enumerate(system.getForces()):
        label = f"force {index} ({type(force).__name__} '{force.getName()}')"
        if force.getForceGroup() not in _ALLOWED_GROUPS:
            problems.append(f"{label} is in force group {force.getForceGroup()}")
        if isinstance(force, openmm.NonbondedForce):
            reciprocal = force.getReciprocalSpaceForceGroup()
            if reciprocal not in (-1, *_ALLOWED_GROUPS):
                problems.append(f"{label} has its reciprocal space in force group {reciprocal}")
    if problems:
        raise InputError(
            "; ".join(problems) + f". Only groups MM_FAST = {MM_FAST} (MM force field), ML_SLOW = {ML_SLOW} "
            f"(ML correction) and MM_SLOW = {MM_SLOW} (MM reciprocal space) are integrated; use "
            "mlmm.splitting.assign_force_groups."
        )


def assign_force_groups(system: openmm.System, ml_forces=()) -> openmm.System:
    """Put the forces with indices ``ml_forces`` in ``ML_SLOW`` and every other force in ``MM_FAST``,
    except the reciprocal space of those NonbondedForces, which goes to ``MM_SLOW``.

    The reciprocal space of a NonbondedForce in ``ML_SLOW`` follows its force. Changes
    ``system`` in place and returns it; ``check_force_groups(system)`` passes afterwards.
    """
    n_forces = system.getNumForces()
    slow = set()
    for index in ml_forces:
        if not _is_int(index) or not 0 <= index < n_forces:
            raise InputError(f"ml_forces entry {index!r} is not a force index in 0..{n_forces - 1}.")
        slow.add(int(index))
    for index, force in enumerate(system.getForces()):
        force.setForceGroup(ML_SLOW if index in slow else MM_FAST)
        if isinstance(force, openmm.NonbondedForce):
            force.setReciprocalSpaceForceGroup(-1 if index in slow else MM_SLOW)
    return system


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
