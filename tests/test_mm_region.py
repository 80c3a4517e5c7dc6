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
