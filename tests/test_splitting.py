"""Difference-splitting integrators (mlmm.splitting) on real OpenMM systems.

Alanine dipeptide in vacuum (openmmtools, Amber ff96, HBond constraints, 22 atoms) on the
Reference platform: double precision and deterministic, and fast enough for picoseconds. For
the reciprocal space of PME, a box of rigid TIP3P water (openmmtools ``WaterBox``, 1.2 nm,
0.55 nm cutoff, 50 molecules).
"""

from __future__ import annotations

import mlmm  # noqa: F401  (first: torch before openmm, so OpenMM loads the openmm-torch plugin)
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import pytest

from mlmm import InputError
from mlmm.forcegroups import ML_SLOW, MM_FAST, MM_GROUPS, MM_SLOW, group_mask, groups_in
from mlmm.splitting import MTSLangevinMiddleIntegrator, assign_force_groups, check_force_groups, make_integrator
from mlmm.units import KB_KJ_PER_MOL_K

KJ = u.kilojoule_per_mole


@pytest.fixture(scope="module")
def dipeptide():
    from openmmtools import testsystems

    return testsystems.AlanineDipeptideVacuum(constraints=app.HBonds)


def torsions_slow(system: openmm.System) -> openmm.System:
    """Everything in MM_FAST except the PeriodicTorsionForce, which goes to ML_SLOW."""
    slow = [i for i, f in enumerate(system.getForces()) if isinstance(f, openmm.PeriodicTorsionForce)]
    return assign_force_groups(openmm.XmlSerializer.clone(system), slow)


@pytest.fixture(scope="module")
def water():
    """(System with mlmm's force groups, positions, velocities at 300 K): a PME water box, relaxed for 0.2 ps."""
    from openmmtools import testsystems

    box = testsystems.WaterBox(box_edge=1.2 * u.nanometer, cutoff=0.55 * u.nanometer)
    system = assign_force_groups(box.system)
    return (system, *equilibrated(system, box.positions, 0.002, 100, seeds=(5, 6), max_iterations=50))


def equilibrated(system, positions, timestep_ps: float, steps: int, seeds: tuple[int, int], max_iterations: int):
    """Positions and velocities after minimizing and ``steps`` steps of Langevin dynamics at 300 K
    (5/ps); ``seeds``: of the noise and of the initial velocities."""
    integrator = openmm.LangevinMiddleIntegrator(300, 5, timestep_ps)
    integrator.setRandomNumberSeed(seeds[0])
    context = reference_context(system, integrator, positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10, max_iterations)
    context.setVelocitiesToTemperature(300, seeds[1])
    integrator.step(steps)
    state = context.getState(getPositions=True, getVelocities=True)
    return state.getPositions(asNumpy=True), state.getVelocities(asNumpy=True)


def reference_context(system, integrator, positions, velocities=None):
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    if velocities is not None:
        context.setVelocities(velocities)
    return context


def offset_by_half_kick(system, positions, velocities, dt: float, groups=-1):
    """``v - (dt/2) f/m`` (nm/ps), ``f`` the forces of ``groups``, projected onto the constraints: the
    leapfrog (LangevinMiddle) velocities that start the same trajectory as velocity Verlet's ``v``."""
    probe = reference_context(system, openmm.VerletIntegrator(dt), positions, velocities)
    forces = probe.getState(getForces=True, groups=groups).getForces(asNumpy=True).value_in_unit(KJ / u.nanometer)
    masses = np.array([system.getParticleMass(i).value_in_unit(u.dalton) for i in range(system.getNumParticles())])
    probe.setVelocities(velocities.value_in_unit(u.nanometer / u.picosecond) - 0.5 * dt * forces / masses[:, None])
    probe.applyVelocityConstraints(1e-12)
    return probe.getState(getVelocities=True).getVelocities(asNumpy=True)


@pytest.fixture(scope="module")
def thermal_state(dipeptide):
    """Minimized and equilibrated (1 ps at 300 K) positions and velocities."""
    system = assign_force_groups(openmm.XmlSerializer.clone(dipeptide.system))
    return equilibrated(system, dipeptide.positions, 0.001, 1000, seeds=(11, 5), max_iterations=200)


# ---------------------------------------------------------------------- construction
@pytest.mark.parametrize("ensemble, k, constant_pressure, expected", [
    ("nvt", 1, False, openmm.LangevinMiddleIntegrator),
    ("nve", 1, False, openmm.VerletIntegrator),
    ("nvt", 3, False, MTSLangevinMiddleIntegrator),
    ("nvt", 3, True, openmm.MTSLangevinIntegrator),
    ("nve", 3, False, openmm.MTSIntegrator),
])
def test_integrator_kind_and_outer_step(ensemble, k, constant_pressure, expected):
    integrator = make_integrator(inner_timestep=1.5 * u.femtosecond, mts_factor=k, ensemble=ensemble, seed=4,
                                 constant_pressure=constant_pressure)
    assert isinstance(integrator, expected)
    assert integrator.getStepSize().value_in_unit(u.femtosecond) == pytest.approx(1.5 * k)
    # plain floats are in OpenMM units (ps, K, 1/ps)
    plain = make_integrator(300.0, 1.0, 0.0015, k, ensemble, constant_pressure=constant_pressure)
    assert plain.getStepSize().value_in_unit(u.femtosecond) == pytest.approx(1.5 * k)


def test_langevin_temperature_and_friction_in_openmm_units():
    integrator = make_integrator(temperature=310 * u.kelvin, friction=2.0 / u.picosecond, mts_factor=4, seed=1,
                                 constant_pressure=True)
    kt = integrator.getGlobalVariableByName("kT")
    assert kt == pytest.approx(KB_KJ_PER_MOL_K * 310, rel=1e-6)
    # a = exp(-friction * inner step): the thermostat acts at every inner step of 2 fs
    assert integrator.getGlobalVariableByName("a") == pytest.approx(np.exp(-2.0 * 0.002))
    native = make_integrator(temperature=310 * u.kelvin, friction=2.0 / u.picosecond, mts_factor=4, seed=1)
    assert native.inner.getTemperature().value_in_unit(u.kelvin) == pytest.approx(310)
    assert native.inner.getFriction().value_in_unit(u.picosecond**-1) == pytest.approx(2.0)
    assert native.inner.getStepSize().value_in_unit(u.femtosecond) == pytest.approx(2.0)
    assert native.getRandomNumberSeed() == 2  # seed + 1: OpenMM reads 0 as "random"


def test_seeded_mts_langevin_runs_are_reproduced(dipeptide, thermal_state):
    """The same seed gives the same trajectory on the Reference platform, another seed another.

    The Reference platform seeds one process-wide generator from each sub-integrator of the
    CompoundIntegrator as the Context is created, so the kick must carry the seed too.
    """
    system = torsions_slow(dipeptide.system)

    def end_positions(seed):
        integrator = make_integrator(300 * u.kelvin, 5.0, 0.002, 4, "nvt", seed=seed)
        context = reference_context(system, integrator, *thermal_state)
        integrator.step(100)
        return context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)

    first = end_positions(7)
    assert np.array_equal(end_positions(7), first)
    assert np.abs(end_positions(8) - first).max() > 1e-3


@pytest.mark.parametrize("kwargs, fragment", [
    ({"mts_factor": 0}, "mts_factor = 0"),
    ({"mts_factor": 2.5}, "mts_factor = 2.5"),
    ({"temperature": -5}, "temperature = -5.0 K"),
    ({"inner_timestep": 0}, "inner_timestep = 0.0 ps"),
    ({"friction": -1}, "friction = -1.0"),
    ({"ensemble": "npt"}, "ensemble = 'npt'"),
    ({"seed": -3}, "seed = -3"),
    ({"inner_timestep": 2 * u.nanometer}, "incompatible"),
])
def test_bad_integrator_arguments(kwargs, fragment):
    with pytest.raises(InputError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        make_integrator(**kwargs)


def test_force_group_check_names_the_offending_force(dipeptide):
    system = openmm.XmlSerializer.clone(dipeptide.system)
    assign_force_groups(system)
    check_force_groups(system)
    torsion_index = next(i for i, f in enumerate(system.getForces()) if isinstance(f, openmm.PeriodicTorsionForce))
    system.getForce(torsion_index).setForceGroup(5)
    with pytest.raises(InputError, match=r"PeriodicTorsionForce.*force group 5"):
        check_force_groups(system)
    assign_force_groups(system, [torsion_index])
    check_force_groups(system)
    assert system.getForce(torsion_index).getForceGroup() == ML_SLOW
    assert {f.getForceGroup() for i, f in enumerate(system.getForces()) if i != torsion_index} == {MM_FAST}
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    assert nonbonded.getReciprocalSpaceForceGroup() == MM_SLOW
    nonbonded.setReciprocalSpaceForceGroup(7)
    with pytest.raises(InputError, match="reciprocal space in force group 7"):
        check_force_groups(system)
    with pytest.raises(InputError, match="not a force index"):
        assign_force_groups(system, [99])


# ---------------------------------------------------------------------- dynamics
def test_mts_with_empty_slow_group_is_single_step_dynamics(dipeptide, thermal_state):
    """With nothing in ML_SLOW, k inner steps of RESPA are k ordinary steps of the inner step.

    Velocity Verlet (the RESPA integrators) and leapfrog (LangevinMiddle and Verlet with no
    friction) produce the same positions once the leapfrog starts from the half-step
    velocities v(-dt/2) = v(0) - dt/2 F(0)/m (projected onto the constraints).
    """
    system = assign_force_groups(openmm.XmlSerializer.clone(dipeptide.system))
    positions, velocities = thermal_state
    dt, k, n_outer = 0.002, 4, 50
    half_step_velocities = offset_by_half_kick(system, positions, velocities, dt)

    def final_positions(integrator, start_velocities, steps):
        context = reference_context(system, integrator, positions, start_velocities)
        integrator.step(steps)
        return context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)

    start = positions.value_in_unit(u.nanometer)
    # NVE: velocity-Verlet RESPA against leapfrog Verlet; NVT without barostat: RESPA on native
    # LangevinMiddle steps against LangevinMiddle, both leapfrog; NVT with barostat: RESPA as a
    # CustomIntegrator (velocity Verlet) against LangevinMiddle.
    for ensemble, constant_pressure, single_start in (("nve", False, half_step_velocities),
                                                      ("nvt", False, velocities),
                                                      ("nvt", True, half_step_velocities)):
        mts = final_positions(make_integrator(friction=0.0, inner_timestep=dt, mts_factor=k, ensemble=ensemble,
                                              constant_pressure=constant_pressure), velocities, n_outer)
        single = final_positions(make_integrator(friction=0.0, inner_timestep=dt, mts_factor=1, ensemble=ensemble),
                                 single_start, k * n_outer)
        assert np.abs(mts - start).max() > 0.1  # the molecule moved (0.4 ps at 300 K)
        assert np.abs(mts - single).max() < 1e-6


def test_native_mts_langevin_follows_mts_langevin_integrator(dipeptide, thermal_state):
    """With torsions in the slow group, MTSLangevinMiddleIntegrator (inner LangevinMiddle steps)
    and OpenMM's MTSLangevinIntegrator (a CustomIntegrator) give the same positions.

    Without friction both are deterministic. The native scheme is the custom one conjugated by
    half a fast kick (LangevinMiddle's velocity convention), so it starts from
    v - (dt/2) f_fast/m. Also checked: time advances by the outer step, the slow force acts
    (a run with the slow group left out ends far away), and the two kinetic temperatures
    differ only by the half-kick offset.
    """
    system = torsions_slow(dipeptide.system)
    positions, velocities = thermal_state
    dt, k, n_outer = 0.002, 4, 50
    shifted = offset_by_half_kick(system, positions, velocities, dt, {MM_FAST})

    def run(integrator, start_velocities, drop_slow=False):
        run_system = system
        if drop_slow:
            run_system = openmm.XmlSerializer.clone(system)
            for force in run_system.getForces():
                if force.getForceGroup() == ML_SLOW:
                    force.setForceGroup(7)  # outside the integrated groups: never integrated
        context = reference_context(run_system, integrator, positions, start_velocities)
        integrator.step(n_outer)
        state = context.getState(getPositions=True)
        return state.getPositions(asNumpy=True).value_in_unit(u.nanometer), state.getTime().value_in_unit(u.picosecond)

    custom, _ = run(make_integrator(friction=0.0, inner_timestep=dt, mts_factor=k, constant_pressure=True), velocities)
    native, time = run(make_integrator(friction=0.0, inner_timestep=dt, mts_factor=k), shifted)
    without_slow, _ = run(make_integrator(friction=0.0, inner_timestep=dt, mts_factor=k), shifted, drop_slow=True)
    assert time == pytest.approx(n_outer * k * dt)
    assert np.abs(native - custom).max() < 1e-6
    assert np.abs(without_slow - custom).max() > 1e-2


def langevin_averages(system, k, thermal_state, samples=2400):
    """Means over an NVT run at 300 K, friction 5/ps, 2 fs inner steps, sampled every 0.1 ps.

    Returns (kinetic temperature in K, energy of the slow group, total potential energy),
    energies in kJ/mol. Friction 5/ps decorrelates the kinetic energy within ~0.1 ps.
    The bounds below are >= 5 standard errors of the seed-to-seed scatter, so that they do not
    rest on the particular noise of seed 7.
    """
    integrator = make_integrator(300 * u.kelvin, 5.0, 0.002, k, "nvt", seed=7)
    context = reference_context(system, integrator, *thermal_state)
    dof = 3 * system.getNumParticles() - system.getNumConstraints() - 3
    temperatures, slow_energies, potential_energies = [], [], []
    for _ in range(samples):
        integrator.step(50 // k)
        state = context.getState(getEnergy=True)
        temperatures.append(2 * state.getKineticEnergy().value_in_unit(KJ) / (dof * KB_KJ_PER_MOL_K))
        potential_energies.append(state.getPotentialEnergy().value_in_unit(KJ))
        slow_energies.append(context.getState(getEnergy=True, groups={ML_SLOW}).getPotentialEnergy().value_in_unit(KJ))
    return np.mean(temperatures), np.mean(slow_energies), np.mean(potential_energies)


def test_reciprocal_space_goes_to_its_own_slow_group(water):
    """The PME mesh sits in MM_SLOW, the rest of the NonbondedForce in MM_FAST; together they are the MM energy."""
    system, positions, _ = water
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    assert nonbonded.getNonbondedMethod() == openmm.NonbondedForce.PME
    assert (nonbonded.getForceGroup(), nonbonded.getReciprocalSpaceForceGroup()) == (MM_FAST, MM_SLOW)
    assert groups_in(system) == {MM_FAST, MM_SLOW}
    context = reference_context(system, openmm.VerletIntegrator(0.001), positions)

    def energy(*groups):
        mask = group_mask(*groups) if groups else -1
        return context.getState(getEnergy=True, groups=mask).getPotentialEnergy().value_in_unit(KJ)

    assert abs(energy(MM_SLOW)) > 1.0  # the mesh holds energy of its own
    assert energy(*MM_GROUPS) == pytest.approx(energy(), abs=1e-8)


def test_native_mts_langevin_follows_mts_langevin_integrator_with_the_pme_mesh_slow(water):
    """With the reciprocal space in MM_SLOW, MTSLangevinMiddleIntegrator (both slow groups in one
    kick) and OpenMM's MTSLangevinIntegrator (a kick per group) give the same positions, and
    leaving MM_SLOW out of the dynamics changes them. Deterministic without friction; the native
    scheme starts from the velocities offset by half a fast kick (see the dipeptide test).
    """
    system, positions, velocities = water
    dt, k, n_outer = 0.002, 2, 25
    shifted = offset_by_half_kick(system, positions, velocities, dt, {MM_FAST})

    def final_positions(run_system, integrator, start_velocities):
        context = reference_context(run_system, integrator, positions, start_velocities)
        integrator.step(n_outer)
        return context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)

    custom = final_positions(system, make_integrator(friction=0.0, inner_timestep=dt, mts_factor=k,
                                                     constant_pressure=True), velocities)
    native = final_positions(system, make_integrator(friction=0.0, inner_timestep=dt, mts_factor=k), shifted)
    without_mesh = openmm.XmlSerializer.clone(system)
    next(f for f in without_mesh.getForces() if isinstance(f, openmm.NonbondedForce)).setReciprocalSpaceForceGroup(7)
    dropped = final_positions(without_mesh, make_integrator(friction=0.0, inner_timestep=dt, mts_factor=k), shifted)
    assert np.abs(native - custom).max() < 1e-6
    assert np.abs(dropped - custom).max() > 1e-4


def test_mts_langevin_evaluates_the_slow_groups_once_per_outer_step(water):
    """The slow groups are evaluated together, once per outer step (the closing kick's forces
    serve the next opening kick), the fast group once per inner step. Counted by a PythonForce
    of zero force in each group (a kick per slow group would evaluate one of them twice)."""
    system, positions, velocities = water
    calls = {MM_FAST: 0, ML_SLOW: 0, MM_SLOW: 0}

    def counter(group):
        def count(state):
            calls[group] += 1
            return 0.0, np.zeros((system.getNumParticles(), 3))

        force = openmm.PythonForce(count)
        force.setForceGroup(group)
        return force

    counted = openmm.XmlSerializer.clone(system)
    for group in calls:
        counted.addForce(counter(group))
    integrator = make_integrator(inner_timestep=0.002, mts_factor=2, seed=3)
    context = reference_context(counted, integrator, positions, velocities)
    integrator.step(10)
    del context
    # the first opening kick, then one per closing kick; k = 2 inner steps per outer step
    assert calls == {MM_FAST: 20, ML_SLOW: 11, MM_SLOW: 11}


@pytest.mark.parametrize("k", [1, 4])
def test_mts_langevin_samples_the_target_temperature(dipeptide, thermal_state, k):
    """Equipartition: the mean kinetic temperature equals the bath's, within its statistical error.

    Everything in the fast group, so k = 4 checks that the compound integrator keeps the inner
    thermostat. 51 degrees of freedom fluctuate by T sqrt(2/51) = 59 K per sample; 2400
    samples 0.1 ps apart scatter by 1.7 K from run to run (measured, k = 4), so 15 K is a
    > 5-sigma bound. A thermostat with a wrong kT misses it by far more.
    """
    system = assign_force_groups(openmm.XmlSerializer.clone(dipeptide.system))
    temperature, _, _ = langevin_averages(system, k, thermal_state)
    assert temperature == pytest.approx(300.0, abs=15.0)


def test_mts_langevin_with_a_slow_force_samples_the_single_step_ensemble(dipeptide, thermal_state):
    """Torsions in the slow group at an 8 fs outer step (k = 4 x 2 fs): the mean torsion energy
    and the mean potential energy equal those of single-step Langevin (k = 1, same system).

    Configurational averages are what MTS must preserve, and they see a broken split: a slow
    kick of half or 1.5 times its size moves the mean torsion energy from 20 to 34 or 14
    kJ/mol; a bath 15 K too hot moves the mean potential by +3 kJ/mol. Over 8 pairs of runs
    the differences scatter by 0.86 (torsions) and 0.52 kJ/mol (potential) around 0.04 and
    0.15, hence the bounds of 5 and 3 kJ/mol. The kinetic temperature is not compared: the
    velocities after the closing slow half kick read 2% cold at this outer step (5.9 +- 1.7 K
    below k = 1, while those before it read 300-302 K), an estimator effect of RESPA that the
    positions do not share.
    """
    system = torsions_slow(dipeptide.system)
    _, torsions_single, potential_single = langevin_averages(system, 1, thermal_state)
    _, torsions_mts, potential_mts = langevin_averages(system, 4, thermal_state)
    assert torsions_mts == pytest.approx(torsions_single, abs=5.0)
    assert potential_mts == pytest.approx(potential_single, abs=3.0)


def total_energy_series(system, integrator, positions, velocities, duration_ps, sample_every_ps=0.008):
    """Times (ps) and total energies (kJ/mol) of an NVE trajectory; kinetic energies alongside."""
    context = reference_context(system, integrator, positions, velocities)
    context.applyConstraints(1e-10)
    context.applyVelocityConstraints(1e-10)
    outer = integrator.getStepSize().value_in_unit(u.picosecond)
    steps = max(1, round(sample_every_ps / outer))
    times, total, kinetic = [], [], []
    for i in range(int(round(duration_ps / (steps * outer)))):
        integrator.step(steps)
        state = context.getState(getEnergy=True)
        times.append((i + 1) * steps * outer)
        kinetic.append(state.getKineticEnergy().value_in_unit(KJ))
        total.append(state.getPotentialEnergy().value_in_unit(KJ) + kinetic[-1])
    return np.array(times), np.array(total), np.array(kinetic)


def conservation(times, total, kinetic):
    """(fluctuation ratio std(E)/std(K), drift of the linear fit over the run in kJ/mol)."""
    slope = np.polyfit(times, total, 1)[0]
    return total.std() / kinetic.std(), abs(slope) * (times[-1] - times[0])


#: accurate integration keeps total-energy fluctuations small against kinetic ones
#: (Allen & Tildesley); 0.05 allows the O(dt^2) shadow-energy oscillation of 1-4 fs steps.
MAX_FLUCTUATION_RATIO = 0.05
#: a symplectic integrator has no secular drift: over 20 ps the fitted drift must stay
#: below 0.5 kJ/mol = 0.2 kT (300 K), i.e. 0.2 kT/ns per degree of freedom for 51 of them.
MAX_DRIFT_KJ_MOL = 0.5


@pytest.mark.parametrize("inner_fs, k", [(1, 1), (1, 2), (1, 4)])
def test_velocity_verlet_respa_conserves_energy(dipeptide, thermal_state, inner_fs, k):
    """NVE RESPA with the torsions in the slow group conserves the total energy over 20 ps."""
    system = torsions_slow(dipeptide.system)
    integrator = make_integrator(inner_timestep=inner_fs * u.femtosecond, mts_factor=k, ensemble="nve")
    ratio, drift = conservation(*total_energy_series(system, integrator, *thermal_state, duration_ps=20.0))
    assert ratio < MAX_FLUCTUATION_RATIO
    assert drift < MAX_DRIFT_KJ_MOL


def test_velocity_verlet_respa_with_the_pme_mesh_slow_conserves_energy(water):
    """NVE RESPA of the PME water box, 2 fs inner steps, the mesh at the 4 fs outer step (k = 2):
    the total energy's fluctuations stay small against the kinetic energy's over 2 ps (measured
    0.018, against 0.009 with k = 1 and 2.0 with the mesh left out of the dynamics)."""
    system, positions, velocities = water
    integrator = make_integrator(inner_timestep=2 * u.femtosecond, mts_factor=2, ensemble="nve")
    ratio, _ = conservation(*total_energy_series(system, integrator, positions, velocities, duration_ps=2.0))
    assert ratio < MAX_FLUCTUATION_RATIO


def test_energy_criteria_catch_a_broken_split(dipeptide, thermal_state):
    """The same criteria fail when the slow group is left out of the integration."""
    system = torsions_slow(dipeptide.system)
    broken = openmm.MTSIntegrator(0.004, [(MM_FAST, 4)])  # ML_SLOW never applied, but in the energy
    ratio, drift = conservation(*total_energy_series(system, broken, *thermal_state, duration_ps=20.0))
    assert ratio > 20 * MAX_FLUCTUATION_RATIO
    assert drift > MAX_DRIFT_KJ_MOL
