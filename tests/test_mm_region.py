"""The MM energy of the region alone (mlmm.embedding.mm_region): "pairs" against "box".

"box" is the exact energy of the region alone in the periodic box (a NonbondedForce copy);
"pairs" sums the region's atom pairs (minimum image). Without periodic images (NoCutoff) and
with reaction field (a cutoff below half the box) the two are the same energy; under PME they
differ only by the region's interaction with its own images, which for a point charge is the
Wigner self-energy -k q^2 xi / (2 L) of a cubic lattice (Nijboer and De Wette).
"""

from __future__ import annotations

import copy

import numpy as np
import openmm
import openmm.unit as u
import pytest

from mlmm import InputError
from mlmm.embedding.mm_region import region_mm_forces
from mlmm.regions import resolve_region
from mlmm.units import COULOMB_CONSTANT

#: Madelung-type constant of a unit point charge in a cubic lattice with neutralizing background
WIGNER_CUBIC = 2.837297


def region_energy_and_forces(system, positions, region, nonbonded):
    """Energy (kJ/mol) and forces (kJ/mol/nm) of the region's MM forces alone, Reference platform."""
    alone = openmm.System()
    for index in range(system.getNumParticles()):
        alone.addParticle(system.getParticleMass(index))
    alone.setDefaultPeriodicBoxVectors(*system.getDefaultPeriodicBoxVectors())
    for force in region_mm_forces(system, region, nonbonded).values():
        alone.addForce(force)
    context = openmm.Context(alone, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    return state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole), state.getForces(asNumpy=True)._value


def with_method(system, method):
    system = copy.deepcopy(system)
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            force.setNonbondedMethod(method)
    return system


@pytest.mark.parametrize("method", [openmm.NonbondedForce.NoCutoff, openmm.NonbondedForce.CutoffPeriodic,
                                    openmm.NonbondedForce.CutoffNonPeriodic])
def test_pairs_equal_box_without_periodic_images(toluene_water, method):
    system = with_method(toluene_water.system, method)
    region = resolve_region(toluene_water, "ligand")
    e_box, f_box = region_energy_and_forces(system, toluene_water.positions, region, "box")
    e_pairs, f_pairs = region_energy_and_forces(system, toluene_water.positions, region, "pairs")
    assert abs(e_box) > 10.0  # a real energy, not an empty force
    assert e_pairs == pytest.approx(e_box, abs=1e-5)
    np.testing.assert_allclose(f_pairs, f_box, atol=1e-4)


def test_pairs_leave_out_only_the_small_self_image_term_of_a_neutral_region_under_pme(toluene_water):
    region = resolve_region(toluene_water, "ligand")
    e_box, f_box = region_energy_and_forces(toluene_water.system, toluene_water.positions, region, "box")
    e_pairs, f_pairs = region_energy_and_forces(toluene_water.system, toluene_water.positions, region, "pairs")
    assert e_pairs == pytest.approx(e_box, abs=1e-2)
    assert np.abs(f_pairs - f_box).max() < 0.5  # kJ/mol/nm, against ~2,500 kJ/mol/nm intramolecular forces


def test_box_holds_the_wigner_self_energy_of_a_charged_region(toluene_water):
    """A single ion: no pairs, and under PME its energy with its own images is -k q^2 xi / (2 L)."""
    box = np.array([v.value_in_unit(u.nanometer) for v in toluene_water.system.getDefaultPeriodicBoxVectors()])
    assert np.allclose(box, np.diag(np.diag(box))) and np.ptp(np.diag(box)) < 1e-9, "needs a cubic box"
    ion = resolve_region(toluene_water, "ions")[:1]
    nonbonded = next(f for f in toluene_water.system.getForces() if isinstance(f, openmm.NonbondedForce))
    charge = nonbonded.getParticleParameters(int(ion[0]))[0].value_in_unit(u.elementary_charge)
    e_box, _ = region_energy_and_forces(toluene_water.system, toluene_water.positions, ion, "box")
    assert region_mm_forces(toluene_water.system, ion, "pairs") == {}
    expected = -COULOMB_CONSTANT * charge**2 * WIGNER_CUBIC / (2 * box[0, 0])
    assert e_box == pytest.approx(expected, rel=2e-3)


def test_unsupported_choices_are_refused(toluene_water):
    region = resolve_region(toluene_water, "ligand")
    with pytest.raises(InputError, match="unknown mm_region"):
        region_mm_forces(toluene_water.system, region, "exact")
    with pytest.raises(InputError, match="LJPME"):
        region_mm_forces(with_method(toluene_water.system, openmm.NonbondedForce.LJPME), region, "pairs")


def bonded_test_system():
    """Six particles in a periodic box with one term of each bonded kind inside atoms 0-3 and
    one term of each kind reaching atom 4 or 5 (outside the region), OpenMM's standard forces."""
    system = openmm.System()
    for _ in range(6):
        system.addParticle(12.0)
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(3, 0, 0), openmm.Vec3(0, 3, 0), openmm.Vec3(0, 0, 3))
    bonds = openmm.HarmonicBondForce()
    bonds.addBond(0, 1, 0.15, 3.0e5)
    bonds.addBond(1, 4, 0.11, 2.5e5)
    angles = openmm.HarmonicAngleForce()
    angles.addAngle(0, 1, 2, 1.9, 400.0)
    angles.addAngle(1, 2, 5, 2.0, 300.0)
    torsions = openmm.PeriodicTorsionForce()
    torsions.addTorsion(0, 1, 2, 3, 3, 0.4, 2.1)
    torsions.addTorsion(0, 1, 2, 3, 1, 3.1, 0.7)
    torsions.addTorsion(1, 2, 3, 4, 2, 0.0, 5.0)
    rb = openmm.RBTorsionForce()
    rb.addTorsion(0, 1, 2, 3, 1.2, -0.8, 2.3, 0.4, -1.1, 0.6)
    rb.addTorsion(2, 3, 4, 5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    for force in (bonds, angles, torsions, rb):
        system.addForce(force)
    positions = np.random.default_rng(4).normal(scale=0.12, size=(6, 3)) + np.arange(6)[:, None] * 0.1
    return system, positions


TERM_KINDS = {openmm.HarmonicBondForce: ("Bond", 2), openmm.HarmonicAngleForce: ("Angle", 3),
              openmm.PeriodicTorsionForce: ("Torsion", 4), openmm.RBTorsionForce: ("Torsion", 4)}


def particles_like(system):
    """An empty System with the particles and box of ``system``."""
    empty = openmm.System()
    for index in range(system.getNumParticles()):
        empty.addParticle(system.getParticleMass(index))
    empty.setDefaultPeriodicBoxVectors(*system.getDefaultPeriodicBoxVectors())
    return empty


def standard_inside_terms(system, region):
    """OpenMM's standard forces of ``system`` with only the terms inside ``region``: the reference."""
    inside = set(int(i) for i in region)
    reference = particles_like(system)
    for force in system.getForces():
        kind, n_atoms = TERM_KINDS[type(force)]
        restricted = type(force)()
        for index in range(getattr(force, f"getNum{kind}s")()):
            parameters = getattr(force, f"get{kind}Parameters")(index)
            if set(parameters[:n_atoms]) <= inside:
                getattr(restricted, f"add{kind}")(*parameters)
        reference.addForce(restricted)
    return reference


def energy_forces_derivatives(system, positions, **parameters):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    for name, value in parameters.items():
        context.setParameter(name, value)
    state = context.getState(getEnergy=True, getForces=True, getParameterDerivatives=bool(parameters))
    derivatives = dict(state.getEnergyParameterDerivatives()) if parameters else {}
    return (state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer), derivatives)


def test_bonded_terms_inside_the_region_equal_openmm_standard_forces():
    """Bonds, angles, periodic and Ryckaert-Bellemans torsions: energy and forces as OpenMM computes them."""
    system, positions = bonded_test_system()
    region = np.arange(4)
    forces = region_mm_forces(system, region)
    assert set(forces) == {"mm_bonds", "mm_angles", "mm_torsions", "mm_rb_torsions"}
    assert [forces["mm_bonds"].getNumBonds(), forces["mm_angles"].getNumAngles(),
            forces["mm_torsions"].getNumTorsions(), forces["mm_rb_torsions"].getNumTorsions()] == [1, 1, 2, 1]
    alone = particles_like(system)
    for force in forces.values():
        alone.addForce(force)
    e_ref, f_ref, _ = energy_forces_derivatives(standard_inside_terms(system, region), positions)
    e, f, _ = energy_forces_derivatives(alone, positions)
    assert abs(e_ref) > 1.0
    assert e == pytest.approx(e_ref, rel=1e-10, abs=1e-9)
    np.testing.assert_allclose(f, f_ref, rtol=1e-9, atol=1e-7)


@pytest.mark.parametrize("nonbonded", ["pairs", "box"])
def test_lambda_scaled_forces_subtract_lambda_times_the_region_energy(toluene_water, nonbonded):
    """With lambda_parameter: energy -lambda * E_MM(region), forces likewise, dU/dlambda = -E_MM(region)."""
    region = resolve_region(toluene_water, "ligand")
    e_region, f_region = region_energy_and_forces(toluene_water.system, toluene_water.positions, region, nonbonded)
    scaled = particles_like(toluene_water.system)
    for force in region_mm_forces(toluene_water.system, region, nonbonded, lambda_parameter="lam",
                                  lambda_value=0.25).values():
        scaled.addForce(force)
    for lam in (0.0, 0.3, 1.0):
        e, f, derivatives = energy_forces_derivatives(scaled, toluene_water.positions, lam=lam)
        assert e == pytest.approx(-lam * e_region, abs=1e-6)
        np.testing.assert_allclose(f, -lam * f_region, atol=1e-5)
        assert derivatives["lam"] == pytest.approx(-e_region, abs=1e-6)
