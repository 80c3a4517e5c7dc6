"""Link atoms: ML regions that cut covalent bonds, capped with hydrogens (AIMNet2, real weights).

Two systems: ACE-ARG-NME in TIP3P (the OpenFF toolkit's MainChain_ARG.pdb, built here in a few
seconds) with the arginine side chain as the region (cut CA-CB, charge +1), and T4 lysozyme with
toluene (the session fixture) with a cavity leucine side chain plus the ligand as the region.
References are independent of mlmm's link-atom code: the cut bonds, ratios and cap positions are
recomputed here from the topology and the HarmonicBondForce, the ML energy and forces come from
a direct call of the region model, the MM energy of the region alone from a region-only System,
the redistributed charges and the coupling from NumPy, and forces from finite differences.
"""

from __future__ import annotations

import numpy as np
import openmm
import openmm.unit as u
import pytest
import torch

from embedding_reference import (
    coupling_energy_numpy,
    nve_total_energy_std_and_drift,
    potential_energy,
    region_alone_system,
)
from mlmm import InputError, MolecularSystem, forcegroups
from mlmm.embedding import LAMBDA_ML
from mlmm.embedding.link_atoms import LinkAtoms, create_linked_module, link_atoms_for, redistributed_charges
from mlmm.embedding.mixed import MixedSystem, create_mixed_system
from mlmm.potentials import for_energy_only, load_plugin
from mlmm.regions import resolve_region

KJ = u.kilojoule_per_mole
KJ_NM = KJ / u.nanometer
ARG_SIDE_CHAIN = "resname ARG and sidechain"
# T4L L99A: a leucine lining the toluene cavity (0.23 nm from the ligand) and the ligand
CAVITY_REGION = "(resname LEU and resid 83 and sidechain) or resname LIG"
XH_NM = {6: 0.109, 7: 0.101, 8: 0.096, 16: 0.134}  # standard X-H bond lengths


@pytest.fixture(scope="module")
def arg_peptide(tmp_path_factory):
    """ACE-ARG-NME in TIP3P with Cl- and 0.15 M NaCl (about 1,070 atoms, 2.3 nm box), saved and reloaded."""
    from openff.toolkit.utils import get_data_file_path

    from mlmm.building import build_system

    folder = tmp_path_factory.mktemp("systems") / "arg_peptide"
    build_system(protein=get_data_file_path("proteins/MainChain_ARG.pdb"), progress=False).save(folder)
    return MolecularSystem.load(folder)


@pytest.fixture(scope="module")
def mechanical(arg_peptide):
    # "box": the references below are the region alone in the same periodic box
    return create_mixed_system(arg_peptide, "aimnet2", ARG_SIDE_CHAIN, "mechanical", link_atoms=True, mm_region="box")


@pytest.fixture(scope="module")
def electrostatic(arg_peptide):
    return create_mixed_system(arg_peptide, "aimnet2", ARG_SIDE_CHAIN, "electrostatic", link_atoms=True,
                               mm_region="box")


# ---------------------------------------------------------------- independent references
def reference_caps(molecular_system, region, positions):
    """(Q1, M1) pairs, ratios g and the capped coordinates (region then link H), from first principles."""
    inside = np.zeros(molecular_system.n_atoms, dtype=bool)
    inside[region] = True
    cuts = []
    for bond in molecular_system.topology.bonds():
        i, j = bond[0].index, bond[1].index
        if inside[i] != inside[j]:
            cuts.append((i, j) if inside[i] else (j, i))
    bond_force = next(f for f in molecular_system.system.getForces() if isinstance(f, openmm.HarmonicBondForce))
    lengths = {}
    for k in range(bond_force.getNumBonds()):
        i, j, length, _ = bond_force.getBondParameters(k)
        lengths[frozenset((i, j))] = length.value_in_unit(u.nanometer)
    numbers = molecular_system.atomic_numbers
    ratios = np.array([XH_NM[numbers[q]] / lengths[frozenset((q, m))] for q, m in cuts])
    caps = np.array([positions[q] + g * (positions[m] - positions[q]) for (q, m), g in zip(cuts, ratios)])
    return cuts, ratios, np.concatenate([positions[region], caps])


def direct_ml(molecular_system, region, n_caps, coordinates, energy_only=False):
    """Energy (kJ/mol), forces (kJ/mol/nm) and charges (e) of region + caps from a direct model call.

    ``energy_only``: the model in the mode the mechanical embedding uses (:func:`for_energy_only`),
    whose hand-written gradient differs from autograd's at float32 rounding (1e-6 relative).
    """
    numbers = molecular_system.atomic_numbers[region].tolist() + [1] * n_caps
    model = load_plugin("aimnet2").create_model(numbers, molecular_system.total_charge(region))
    x = torch.tensor(coordinates, dtype=torch.float64, requires_grad=not energy_only)
    if energy_only:
        with torch.no_grad():
            output = for_energy_only(model)(x)
        forces = output["forces"].detach()
    else:
        output = model(x)
        forces = -torch.autograd.grad(output["energy"], x)[0]
    return float(output["energy"].detach()), forces.numpy(), output["charges"].detach().numpy().astype(np.float64)


def reference_redistributed_charges(molecular_system, charges, region, boundary):
    """RC charges written out plainly: region and M1 atoms zero, q(M1) split evenly over its outside neighbours."""
    outside = set(range(molecular_system.n_atoms)) - set(region.tolist()) - set(boundary)
    coupled = charges.copy()
    coupled[region] = 0.0
    for m1 in boundary:
        m2 = [b[0].index if b[1].index == m1 else b[1].index for b in molecular_system.topology.bonds()
              if m1 in (b[0].index, b[1].index)]
        m2 = [a for a in m2 if a in outside]
        coupled[m2] += charges[m1] / len(m2)
        coupled[m1] = 0.0
    return coupled


def mm_charges(molecular_system):
    nonbonded = next(f for f in molecular_system.system.getForces() if isinstance(f, openmm.NonbondedForce))
    return np.array([nonbonded.getParticleParameters(i)[0].value_in_unit(u.elementary_charge)
                     for i in range(molecular_system.n_atoms)])


def make_context(system, positions):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context


def slow_energy(context):
    state = context.getState(getEnergy=True, groups=forcegroups.group_mask(forcegroups.ML_SLOW))
    return state.getPotentialEnergy().value_in_unit(KJ)


def slow_forces(context):
    state = context.getState(getForces=True, groups=forcegroups.group_mask(forcegroups.ML_SLOW))
    return state.getForces(asNumpy=True).value_in_unit(KJ_NM)


def finite_difference_forces(context, energy, positions, atom, step=1e-3):
    """Minus the central-difference gradient of ``energy()`` at one atom (kJ/mol/nm); restores the positions."""
    forces = np.zeros(3)
    for axis in range(3):
        values = []
        for sign in (+1, -1):
            displaced = positions.copy()
            displaced[atom, axis] += sign * step
            context.setPositions(displaced)
            values.append(energy())
        forces[axis] = -(values[0] - values[1]) / (2 * step)
    context.setPositions(positions)
    return forces


# ---------------------------------------------------------------- tests
def test_side_chain_cut_gets_one_hydrogen_cap_on_ca_cb(arg_peptide):
    region = resolve_region(arg_peptide, ARG_SIDE_CHAIN)
    links = link_atoms_for(arg_peptide, region)
    atoms = list(arg_peptide.topology.atoms())
    assert [atoms[i].name for i in links.inner] == ["CB"] and [atoms[i].name for i in links.outer] == ["CA"]
    assert links.ratios == pytest.approx([0.109 / 0.1526])  # C-H over ff14SB's CT-CT length
    assert LinkAtoms.from_dict(links.to_dict()).ratios == pytest.approx(links.ratios)


@pytest.mark.parametrize("system_name, region, mm_region", [("arg_peptide", ARG_SIDE_CHAIN, "box"),
                                                              ("arg_peptide", ARG_SIDE_CHAIN, "pairs"),
                                                              ("t4l_toluene", CAVITY_REGION, "box")])
def test_mechanical_energy_is_mm_minus_region_plus_capped_ml(system_name, region, mm_region, request):
    """E_mixed(lambda=1) = E_MM(all) - E_MM(region alone) + E_ML(region + caps), to 1e-3 kJ/mol.

    The region alone is in the same periodic box for ``box`` and in vacuum for ``pairs`` (the
    arginine side chain is smaller than the LJ switching distance, so vacuum is the same pair sum).
    """
    molecular_system = request.getfixturevalue(system_name)
    mixed = create_mixed_system(molecular_system, "aimnet2", region, "mechanical", link_atoms=True,
                                mm_region=mm_region)
    positions = molecular_system.positions
    cuts, _, capped = reference_caps(molecular_system, mixed.region, positions)
    assert len(cuts) == len(mixed.link_atoms) == 1
    e_ml, _, _ = direct_ml(molecular_system, mixed.region, len(cuts), capped)
    e_mixed = potential_energy(mixed.system, positions)
    e_mm = potential_energy(molecular_system.system, positions)
    alone = region_alone_system(molecular_system.system, mixed.region, periodic=mm_region == "box")
    e_region = potential_energy(alone, positions[mixed.region])
    assert e_mixed == pytest.approx(e_mm - e_region + e_ml, abs=1e-3)


def test_link_forces_reach_q1_and_m1_by_the_chain_rule(mechanical, arg_peptide):
    """Slow-group forces = direct model forces with the cap's force split (1 - g) to Q1 and g to M1, minus MM(region)."""
    positions = arg_peptide.positions
    region = mechanical.region
    q1, m1 = mechanical.link_atoms.inner[0], mechanical.link_atoms.outer[0]
    _, (g,), capped = reference_caps(arg_peptide, region, positions)
    _, ml_forces, _ = direct_ml(arg_peptide, region, 1, capped, energy_only=True)
    alone = make_context(region_alone_system(arg_peptide.system, region), positions[region])
    mm_region_forces = alone.getState(getForces=True).getForces(asNumpy=True).value_in_unit(KJ_NM)
    expected = np.zeros((arg_peptide.n_atoms, 3))
    expected[region] = ml_forces[:-1] - mm_region_forces
    expected[q1] += (1 - g) * ml_forces[-1]
    expected[m1] += g * ml_forces[-1]
    forces = slow_forces(make_context(mechanical.system, positions))
    np.testing.assert_allclose(forces, expected, atol=1e-3)
    assert np.linalg.norm(forces[m1]) > 50.0  # the cap is not at rest: M1 really carries a force


def test_mechanical_slow_forces_match_finite_differences(mechanical, arg_peptide):
    """Minus finite differences (step 1e-3 nm) of the slow group at Q1 and M1.

    The slow group holds the ML energy (about -8.5e5 kJ/mol) evaluated in float32; its rounding
    noise gives finite-difference errors of a few kJ/mol/nm at this step (measured: up to 4.5),
    while the forces are tens to hundreds of kJ/mol/nm (M1 about 360).
    """
    positions = arg_peptide.positions.copy()
    context = make_context(mechanical.system, positions)
    forces = slow_forces(context)
    for atom in (mechanical.link_atoms.inner[0], mechanical.link_atoms.outer[0]):
        numerical = finite_difference_forces(context, lambda: slow_energy(context), positions, atom)
        np.testing.assert_allclose(forces[atom], numerical, atol=15.0)


def test_redistributed_charges_conserve_the_environment_charge(electrostatic, arg_peptide):
    region, links = electrostatic.region, electrostatic.link_atoms
    charges = mm_charges(arg_peptide)
    coupled = redistributed_charges(arg_peptide.topology, charges, region, links)
    outside = np.setdiff1d(np.arange(arg_peptide.n_atoms), region)
    assert coupled.sum() == pytest.approx(charges[outside].sum(), abs=1e-12)
    assert np.all(coupled[region] == 0.0) and np.all(coupled[links.outer] == 0.0)
    np.testing.assert_allclose(coupled, reference_redistributed_charges(arg_peptide, charges, region, links.outer),
                               atol=1e-15)
    m1 = links.outer[0]
    changed = np.flatnonzero(coupled[outside] != charges[outside])
    atoms = list(arg_peptide.topology.atoms())
    # CA's charge goes to N, C and HA; CA itself is gone
    assert sorted(atoms[i].name for i in outside[changed]) == ["C", "CA", "HA", "N"]
    assert charges[m1] != 0.0


def test_electrostatic_coupling_with_link_atoms_matches_numpy(electrostatic, mechanical, arg_peptide):
    """Slow group (electrostatic - mechanical) = NumPy coupling of the region's ML charges (caps excluded)."""
    positions = arg_peptide.positions
    region = electrostatic.region
    cuts, _, capped = reference_caps(arg_peptide, region, positions)
    _, _, ml_charges = direct_ml(arg_peptide, region, len(cuts), capped)
    charges = mm_charges(arg_peptide)
    coupled = reference_redistributed_charges(arg_peptide, charges, region, [m for _, m in cuts])
    environment = np.flatnonzero(coupled != 0.0)
    nonbonded = next(f for f in arg_peptide.system.getForces() if isinstance(f, openmm.NonbondedForce))
    cutoff = nonbonded.getCutoffDistance().value_in_unit(u.nanometer)
    expected = coupling_energy_numpy(positions[region], ml_charges[:len(region)], charges[region],
                                     positions[environment], coupled[environment], cutoff, arg_peptide.box_vectors)
    coupling = slow_energy(make_context(electrostatic.system, positions)) - slow_energy(
        make_context(mechanical.system, positions))
    assert coupling == pytest.approx(expected, abs=2e-3)
    assert 0.1 < abs(expected) < 500.0  # a charged side chain in water (measured -5.5 kJ/mol): not zero, not huge


def test_coupling_forces_match_finite_differences(electrostatic, mechanical, arg_peptide):
    """Forces of (electrostatic - mechanical) slow groups at Q1, M1 and an M2 atom.

    M1 feels the coupling only through the geometry dependence of the ML charges (it moves the
    cap); the M2 atoms carry the redistributed charge. The ML energy and its float32 noise cancel
    in the difference, so the tolerance is tight.
    """
    positions = arg_peptide.positions.copy()
    contexts = [make_context(mixed.system, positions) for mixed in (electrostatic, mechanical)]
    coupling_forces = slow_forces(contexts[0]) - slow_forces(contexts[1])
    atoms = list(arg_peptide.topology.atoms())
    q1, m1 = electrostatic.link_atoms.inner[0], electrostatic.link_atoms.outer[0]
    m2 = next(a.index for a in atoms if a.residue.name == "ARG" and a.name == "N")

    def coupling():
        return slow_energy(contexts[0]) - slow_energy(contexts[1])

    class Both:  # moves both contexts together
        @staticmethod
        def setPositions(p):
            for context in contexts:
                context.setPositions(p)

    for atom in (q1, m1, m2):
        numerical = finite_difference_forces(Both, coupling, positions, atom)
        np.testing.assert_allclose(coupling_forces[atom], numerical, atol=0.03 + 1e-3 * np.abs(numerical).max())
    assert np.abs(coupling_forces[m1]).max() > 0.1


def test_region_split_across_the_box_is_made_whole_with_its_caps(mechanical, arg_peptide):
    """Wrap every atom into the box after moving CA-CB onto a box corner: the linked module's energy and forces
    are those of the whole geometry (the caps are placed after making the region and M1 whole)."""
    positions = arg_peptide.positions
    box = arg_peptide.box_vectors
    links = mechanical.link_atoms
    q1, m1 = links.inner[0], links.outer[0]
    shifted = positions - 0.5 * (positions[q1] + positions[m1])  # the bond's midpoint on the box corner
    wrapped = shifted - np.floor(shifted / np.diag(box)) * np.diag(box)
    assert np.abs(wrapped[q1] - wrapped[m1]).max() > 0.5 * box.min()  # really split by the wrapping
    module = create_linked_module(mechanical.region_model, mechanical.region, links, arg_peptide.n_atoms, True,
                                  anchor=0)
    box_tensor = torch.tensor(box)
    energy, forces = module(torch.tensor(shifted), box_tensor)
    energy_wrapped, forces_wrapped = module(torch.tensor(wrapped), box_tensor)
    assert float(energy_wrapped) == pytest.approx(float(energy), abs=0.05)
    np.testing.assert_allclose(forces_wrapped.numpy(), forces.numpy(), atol=0.5)
    assert np.abs(forces.numpy()[m1]).max() > 50.0


def test_lambda_zero_is_pure_mm_with_link_atoms(mechanical, arg_peptide):
    context = make_context(mechanical.system, arg_peptide.positions)
    context.setParameter(LAMBDA_ML, 0.0)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(KJ)
    assert energy == pytest.approx(potential_energy(arg_peptide.system, arg_peptide.positions), abs=1e-6)
    terms = mechanical.energy_terms(context)
    context.setParameter(LAMBDA_ML, 1.0)
    assert terms["ml"] - terms["mm_region"] == pytest.approx(mechanical.energy_terms(context)["ml_correction"], abs=1e-6)


def test_saved_system_with_link_atoms_reloads_with_identical_energy(electrostatic, arg_peptide, tmp_path):
    electrostatic.save(tmp_path / "mixed")
    loaded = MixedSystem.load(tmp_path / "mixed")
    assert np.array_equal(loaded.link_atoms.outer, electrostatic.link_atoms.outer)
    assert loaded.link_atoms.ratios == pytest.approx(electrostatic.link_atoms.ratios)
    energies = [potential_energy(m.system, arg_peptide.positions) for m in (electrostatic, loaded)]
    assert energies[1] == pytest.approx(energies[0], abs=1e-6)


def test_ensemble_spread_is_taken_on_the_capped_region(arg_peptide):
    mixed = create_mixed_system(arg_peptide, "aimnet2", ARG_SIDE_CHAIN, "mechanical",
                                model_options={"ensemble": True}, link_atoms=True)
    cuts, _, capped = reference_caps(arg_peptide, mixed.region, arg_peptide.positions)
    numbers = arg_peptide.atomic_numbers[mixed.region].tolist() + [1] * len(cuts)
    model = load_plugin("aimnet2").create_model(numbers, arg_peptide.total_charge(mixed.region), ensemble=True)
    with torch.no_grad():
        expected = float(model(torch.tensor(capped))["energy_std"])
    terms = mixed.energy_terms(make_context(mixed.system, arg_peptide.positions))
    assert terms["ml_std"] == pytest.approx(expected, abs=0.01)
    assert expected > 0.1


def test_cut_region_without_link_atoms_is_refused(t4l_toluene):
    with pytest.raises(InputError, match=r"cuts 1 covalent bond\(s\) \(LEU.*:CB-LEU.*:CA\); pass link_atoms=True"):
        create_mixed_system(t4l_toluene, "aimnet2", CAVITY_REGION, "mechanical")


@pytest.mark.parametrize("region, message", [
    ("resname ARG and sidechain and not name HB2", "bond ARG.*:CB-ARG.*:HB2 to a hydrogen"),
    ("resname ARG", r"bond ARG\d+:(N-ACE\d+:C|C-NME\d+:N), which is not a single bond"),  # peptide bonds
])
def test_unsuitable_cuts_are_refused(arg_peptide, region, message):
    with pytest.raises(InputError, match=message):
        create_mixed_system(arg_peptide, "aimnet2", region, "mechanical", link_atoms=True)


def test_cut_through_a_ring_is_refused(t4l_toluene):
    with pytest.raises(InputError, match="cuts the ring bond PHE.*; put the whole ring on one side"):
        create_mixed_system(t4l_toluene, "aimnet2", "resname PHE and resid 152 and name CZ HZ", "mechanical",
                            link_atoms=True)


def test_boundary_atom_without_outside_neighbours_is_refused(arg_peptide):
    atoms = list(arg_peptide.topology.atoms())
    ca = next(a.index for a in atoms if a.residue.name == "ARG" and a.name == "CA")
    cb = next(a.index for a in atoms if a.residue.name == "ARG" and a.name == "CB")
    surrounding = np.array(sorted(b[0].index if b[1].index == ca else b[1].index
                                  for b in arg_peptide.topology.bonds() if ca in (b[0].index, b[1].index)))
    links = LinkAtoms(np.array([cb]), np.array([ca]), np.array([0.7]))
    with pytest.raises(InputError, match="ARG.*:CA .* no bonded atom outside the region"):
        redistributed_charges(arg_peptide.topology, mm_charges(arg_peptide), surrounding, links)


@pytest.mark.slow
def test_nve_energy_conservation_with_link_atoms_comparable_to_mm(mechanical, electrostatic, arg_peptide):
    """NVE from the same minimized start: ML/MM with a capped side chain conserves energy about as well as
    pure MM (lambda = 0). A force that missed the chain rule (M1 carries about 360 kJ/mol/nm) would drift
    by tens of kJ/mol over these 150 fs."""
    context = openmm.Context(mechanical.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(arg_peptide.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
    start = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
    std_mm, drift_mm = nve_total_energy_std_and_drift(mechanical.system, start, steps=300, parameters={LAMBDA_ML: 0.0})
    for mixed in (mechanical, electrostatic):
        std, drift = nve_total_energy_std_and_drift(mixed.system, start, steps=300, parameters={LAMBDA_ML: 1.0})
        assert std < 2.0 * std_mm + 0.5 and drift < 2.0 * drift_mm + 2.0, (mixed.embedding, std, drift, std_mm, drift_mm)
