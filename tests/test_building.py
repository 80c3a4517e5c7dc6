"""Building systems: physics of the built MM systems and the save/load round trip."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as u
import pytest
from openff.toolkit import ForceField, Molecule
from openff.toolkit.utils import get_data_file_path
from openff.toolkit.utils.nagl_wrapper import NAGLToolkitWrapper
from openff.units import unit

from mlmm import MolecularSystem
from mlmm.building import Ligand, build_from_recipe, build_system
from mlmm.regions import resolve_region

SYSTEMS = Path(__file__).resolve().parents[1] / "systems"
TOLUENE_SDF = get_data_file_path("molecules/toluene.sdf")


def _context(system: openmm.System, positions, box=None) -> openmm.Context:
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    if box is not None:
        context.setPeriodicBoxVectors(*box)
    context.setPositions(positions)
    context.computeVirtualSites()
    return context


def _energies_by_force_type(system: openmm.System, positions, box=None) -> dict[str, float]:
    """Potential energy (kJ/mol) of each force class, summed over forces of that class."""
    system = copy.deepcopy(system)
    for index, force in enumerate(system.getForces()):
        force.setForceGroup(index)
    context = _context(system, positions, box)
    energies = {}
    for index, force in enumerate(system.getForces()):
        energy = context.getState(getEnergy=True, groups={index}).getPotentialEnergy()
        energy = energy.value_in_unit(u.kilojoule_per_mole)
        energies[type(force).__name__] = energies.get(type(force).__name__, 0.0) + energy
    return energies


def _nonbonded_charges(system: openmm.System) -> np.ndarray:
    force = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    return np.array([force.getParticleParameters(i)[0].value_in_unit(u.elementary_charge)
                     for i in range(system.getNumParticles())])


def _interchange_reference(record, positions_nm):
    """The ligand alone, parametrized directly by OpenFF Interchange (Sage 2.2.1, NAGL charges)."""
    molecule = Molecule.from_mapped_smiles(record.smiles)
    molecule.add_conformer(positions_nm * unit.nanometer)
    molecule.assign_partial_charges("openff-gnn-am1bcc-1.0.0.pt", toolkit_registry=NAGLToolkitWrapper())
    interchange = ForceField("openff-2.2.1.offxml").create_interchange(molecule.to_topology(),
                                                                       charge_from_molecules=[molecule])
    return interchange.to_openmm_system(), molecule


@pytest.fixture(scope="module")
def acetate_water():
    """The charged-ligand recipe: acetate (-1 e) in TIP3P with counter-ions."""
    return build_from_recipe(SYSTEMS / "acetate-water.yaml", progress=False)


# ---------------------------------------------------------------- energies against OpenFF Interchange
def test_vacuum_ligand_terms_equal_direct_interchange_build(toluene_vacuum):
    record = toluene_vacuum.molecules[0]
    positions = toluene_vacuum.positions[record.atom_indices]
    reference, molecule = _interchange_reference(record, positions)
    ours = _energies_by_force_type(toluene_vacuum.system, toluene_vacuum.positions)
    theirs = _energies_by_force_type(reference, positions)
    for term in ("HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce", "NonbondedForce"):
        assert ours[term] == pytest.approx(theirs[term], abs=1e-3), term
    assert abs(ours["NonbondedForce"]) > 1.0  # the comparison is not of two zeros
    expected = molecule.partial_charges.m_as(unit.elementary_charge)
    np.testing.assert_allclose(_nonbonded_charges(toluene_vacuum.system), expected, atol=1e-6)


def test_solvated_ligand_bonded_terms_equal_direct_interchange_build(toluene_water):
    """Water is rigid and ions have no bonds, so every bonded term of the box is the ligand's."""
    record = toluene_water.molecules[0]
    positions = toluene_water.positions[record.atom_indices]
    reference, molecule = _interchange_reference(record, positions)
    ours = _energies_by_force_type(toluene_water.system, toluene_water.positions, toluene_water.box_vectors)
    theirs = _energies_by_force_type(reference, positions)
    for term in ("HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce"):
        assert ours[term] == pytest.approx(theirs[term], abs=1e-3), term
    np.testing.assert_allclose(_nonbonded_charges(toluene_water.system)[record.atom_indices],
                               molecule.partial_charges.m_as(unit.elementary_charge), atol=1e-6)


def test_charged_ligand_vacuum_terms_equal_direct_interchange_build():
    acetate = build_system(["CC(=O)[O-]"], solvent=False, progress=False)
    record = acetate.molecules[0]
    reference, _ = _interchange_reference(record, acetate.positions)
    ours = _energies_by_force_type(acetate.system, acetate.positions)
    theirs = _energies_by_force_type(reference, acetate.positions)
    for term in ("HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce", "NonbondedForce"):
        assert ours[term] == pytest.approx(theirs[term], abs=1e-3), term
    assert acetate.total_charge() == -1
    assert _nonbonded_charges(acetate.system).sum() == pytest.approx(-1.0, abs=1e-4)


# ---------------------------------------------------------------- charges and regions
@pytest.mark.parametrize("name", ["toluene_water", "acetate_water", "t4l_toluene"])
def test_net_charge_is_zero_after_ions(name, request):
    molecular_system = request.getfixturevalue(name)
    assert abs(_nonbonded_charges(molecular_system.system).sum()) < 1e-4
    assert molecular_system.total_charge() == 0
    ion_charges = molecular_system.formal_charges[molecular_system.regions["ions"]]
    assert set(ion_charges.tolist()) <= {-1, 1}


def test_formal_charges_match_system_charges_per_molecule(t4l_toluene, acetate_water):
    """Each molecule's formal charge equals the sum of its partial charges in the System."""
    for molecular_system in (t4l_toluene, acetate_water):
        charges = _nonbonded_charges(molecular_system.system)
        for record in molecular_system.molecules:
            assert charges[record.atom_indices].sum() == pytest.approx(record.formal_charge, abs=1e-4), record.name
    protein = next(r for r in t4l_toluene.molecules if r.role == "protein")
    assert protein.formal_charge == 8  # T4 lysozyme L99A: 13 Lys + 13 Arg + 1 N-term - 10 Asp - 8 Glu - 1 C-term
    acetate = next(r for r in acetate_water.molecules if r.role == "ligand")
    assert acetate.formal_charge == -1


def test_t4l_regions_and_selection(t4l_toluene):
    regions = t4l_toluene.regions
    assert {len(regions["ligand"]), len(regions["protein"])} == {15, 2634}
    everything = np.concatenate([regions[name] for name in ("ligand", "protein", "solvent", "ions")])
    assert np.array_equal(np.sort(everything), np.arange(t4l_toluene.n_atoms))
    np.testing.assert_array_equal(resolve_region(t4l_toluene, "resname LIG"), regions["ligand"])
    # toluene sits in the buried cavity: many protein heavy atoms within 0.45 nm of it
    protein = regions["protein"]
    heavy = protein[t4l_toluene.atomic_numbers[protein] > 1]
    ligand = t4l_toluene.positions[regions["ligand"]]
    distances = np.linalg.norm(ligand[:, None] - t4l_toluene.positions[heavy][None], axis=-1)
    assert (distances.min(axis=0) < 0.45).sum() > 20


def _t4l_context(t4l_toluene) -> openmm.Context:
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(t4l_toluene.system, openmm.VerletIntegrator(0.001), platform, {"Threads": "2"})
    context.setPeriodicBoxVectors(*t4l_toluene.box_vectors)
    context.setPositions(t4l_toluene.positions)
    return context


def test_t4l_energy_and_forces_are_finite_and_pocket_is_relaxed(t4l_toluene):
    state = _t4l_context(t4l_toluene).getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
    assert np.isfinite(energy) and energy / t4l_toluene.n_atoms < -5  # bound, not clashing
    assert np.all(np.isfinite(forces))
    # the posed ligand is not jammed into the protein: its forces are ordinary bonded-scale forces
    assert np.linalg.norm(forces[t4l_toluene.regions["ligand"]], axis=1).max() < 5e3


@pytest.mark.slow
def test_t4l_minimizes_to_finite_energy(t4l_toluene):
    context = _t4l_context(t4l_toluene)
    before = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 100)
    state = context.getState(getEnergy=True, getForces=True)
    after = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
    assert np.isfinite(after) and after < before
    assert after / t4l_toluene.n_atoms < -10  # a minimized solvated protein: about -13 kJ/mol per atom
    assert np.all(np.isfinite(forces))


# ---------------------------------------------------------------- save / load
def test_save_reload_round_trip_gives_identical_energies(acetate_water, tmp_path):
    acetate_water.save(tmp_path / "acetate")
    reloaded = MolecularSystem.load(tmp_path / "acetate")
    before = _energies_by_force_type(acetate_water.system, acetate_water.positions, acetate_water.box_vectors)
    after = _energies_by_force_type(reloaded.system, reloaded.positions, reloaded.box_vectors)
    assert before == after
    np.testing.assert_array_equal(reloaded.positions, acetate_water.positions)
    np.testing.assert_array_equal(reloaded.formal_charges, acetate_water.formal_charges)
    assert reloaded.regions.keys() == acetate_water.regions.keys()
    for name, indices in acetate_water.regions.items():
        np.testing.assert_array_equal(reloaded.regions[name], indices)
    assert reloaded.molecules == acetate_water.molecules
    assert reloaded.metadata == acetate_water.metadata
    assert reloaded.topology.getNumBonds() == acetate_water.topology.getNumBonds()
    names = [(a.residue.name, a.name) for a in reloaded.topology.atoms()]
    assert names == [(a.residue.name, a.name) for a in acetate_water.topology.atoms()]


def test_save_switches_to_pdbx_when_residue_ids_overflow_pdb_columns(toluene_water_dir, tmp_path):
    """Boxes with more than 9,999 residues get 5-digit residue ids, which PDB columns cannot hold."""
    private = MolecularSystem.load(toluene_water_dir)
    residues = list(private.topology.residues())
    for number, residue in enumerate(residues):
        residue.id = str(10_000 + number)
    private.save(tmp_path / "many")
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["metadata.json", "system.xml", "topology.cif"]
    reloaded = MolecularSystem.load(tmp_path / "many")
    assert [r.id for r in reloaded.topology.residues()] == [r.id for r in residues]
    assert reloaded.topology.getNumBonds() == private.topology.getNumBonds()
    assert [a.name for a in reloaded.topology.atoms()] == [a.name for a in private.topology.atoms()]


def test_metadata_records_force_fields_and_options(toluene_water):
    meta = toluene_water.metadata
    assert meta["forcefields"] == {"small_molecule": "openff-2.2.1", "protein": None,  # no protein, none used
                                   "water": "amber/tip3p_standard.xml"}
    assert meta["charge_method"] == "nagl" and meta["nagl_model"] == "openff-gnn-am1bcc-1.0.0.pt"
    assert meta["nonbonded_method"] == "PME" and meta["nonbonded_cutoff_nm"] == 0.9
    assert meta["recipe"]["name"] == "toluene-water"
    nonbonded = next(f for f in toluene_water.system.getForces() if isinstance(f, openmm.NonbondedForce))
    assert nonbonded.getNonbondedMethod() == openmm.NonbondedForce.PME
    assert nonbonded.getCutoffDistance().value_in_unit(u.nanometer) == pytest.approx(0.9)
    assert Molecule.from_mapped_smiles(toluene_water.molecules[0].smiles).to_smiles() == \
        Molecule.from_smiles("Cc1ccccc1").to_smiles()


# ---------------------------------------------------------------- options
def test_vacuum_uses_no_cutoff_and_hbond_constraints(toluene_vacuum):
    assert not toluene_vacuum.is_periodic and toluene_vacuum.box_vectors is None
    nonbonded = next(f for f in toluene_vacuum.system.getForces() if isinstance(f, openmm.NonbondedForce))
    assert nonbonded.getNonbondedMethod() == openmm.NonbondedForce.NoCutoff
    assert toluene_vacuum.system.getNumConstraints() == 8  # the eight C-H bonds


def test_hydrogen_mass_repartitioning_and_all_bond_constraints(toluene_water):
    heavy = build_system([TOLUENE_SDF], hydrogen_mass=3.0 * u.amu, constraints="allbonds", progress=False)

    def masses(molecular_system, region):
        return np.array([molecular_system.system.getParticleMass(int(i)).value_in_unit(u.amu)
                         for i in molecular_system.regions[region]])

    ligand = heavy.regions["ligand"]
    np.testing.assert_allclose(masses(heavy, "ligand")[heavy.atomic_numbers[ligand] == 1], 3.0)
    # mass is moved from the bonded heavy atoms, not added
    assert masses(heavy, "ligand").sum() == pytest.approx(masses(toluene_water, "ligand").sum())
    assert set(np.round(masses(heavy, "solvent"), 3)) == {1.008, 15.999}  # rigid water is left alone
    n_water = len(heavy.regions["solvent"]) // 3
    assert heavy.system.getNumConstraints() == 15 + 3 * n_water  # every toluene bond, plus rigid water
    assert heavy.metadata["hydrogen_mass_amu"] == 3.0 and heavy.metadata["constraints"] == "allbonds"


@pytest.mark.parametrize("water_model, minimum_per_water", [
    ("opc", -35.0), pytest.param("tip4pew", -35.0, marks=pytest.mark.slow)])
def test_four_site_water_models_minimize_to_liquid_energies(water_model, minimum_per_water, tmp_path):
    """4-site water gets its virtual sites; a minimized box is bound like liquid water (below -41 kJ/mol
    per molecule, the liquid's potential energy at 298 K: minimized structures lie lower)."""
    box = build_system([TOLUENE_SDF], water_model=water_model, ionic_strength=0.0, progress=False)
    n_water = len(list(r for r in box.topology.residues() if r.name == "HOH"))
    virtual_sites = [i for i in range(box.n_atoms) if box.system.isVirtualSite(i)]
    assert len(virtual_sites) == n_water and set(virtual_sites) <= set(box.regions["solvent"].tolist())
    assert np.all(box.atomic_numbers[virtual_sites] == 0)
    box.save(tmp_path / water_model)
    reloaded = MolecularSystem.load(tmp_path / water_model)
    context = openmm.Context(reloaded.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"),
                             {"Threads": "1"})
    context.setPeriodicBoxVectors(*reloaded.box_vectors)
    context.setPositions(reloaded.positions)
    context.computeVirtualSites()
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 50)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    assert energy / n_water < minimum_per_water


def test_several_ligands_cofactor_and_residue_names():
    box = build_system(
        [Ligand("CC(=O)[O-]", resname="ACT", name="acetate"), "c1ccccc1O"],
        cofactors=["C[NH3+]"], solvent=False, box_size=3.0, progress=False,
    )
    regions = box.regions
    assert [len(regions[name]) for name in ("ligand0", "ligand1", "ligand", "cofactor")] == [7, 13, 20, 8]
    assert [r.name for r in box.topology.residues()] == ["ACT", "LIG", "COF"]
    assert [(m.role, m.formal_charge) for m in box.molecules] == [("ligand", -1), ("ligand", 0), ("cofactor", 1)]
    assert box.is_periodic and np.allclose(box.box_vectors, np.eye(3) * 3.0)
    # molecules from SMILES were set side by side, not on top of each other
    positions = box.positions
    gaps = [np.linalg.norm(positions[regions[a]][:, None] - positions[regions[b]][None], axis=-1).min()
            for a, b in (("ligand0", "ligand1"), ("ligand1", "cofactor"))]
    assert min(gaps) > 0.3


def test_mol2_and_smiles_give_the_same_toluene_as_sdf(toluene_vacuum):
    from_mol2 = build_system([get_data_file_path("molecules/toluene.mol2")], solvent=False, progress=False)
    from_smiles = build_system(["Cc1ccccc1"], solvent=False, progress=False)
    reference = Molecule.from_mapped_smiles(toluene_vacuum.molecules[0].smiles)
    for built in (from_mol2, from_smiles):
        assert Molecule.from_mapped_smiles(built.molecules[0].smiles).is_isomorphic_with(reference)
        assert built.n_atoms == 15 and np.ptp(built.positions, axis=0).max() > 0.4  # a real 3D conformer


def test_protein_protonated_with_pdbfixer_builds():
    unprotonated = get_data_file_path("proteins/MainChain_ALA_ALA_no_hydrogens.pdb")
    dipeptide = build_system(protein=unprotonated, add_hydrogens_ph=7.4, solvent=False, progress=False)
    assert [r.name for r in dipeptide.topology.residues()] == ["ACE", "ALA", "ALA", "NME"]
    # the same 32 atoms as the protonated MainChain_ALA_ALA.pdb shipped beside it
    assert dipeptide.n_atoms == 32 and (dipeptide.atomic_numbers == 1).sum() == 17  # 3 + 5 + 5 + 4
    assert dipeptide.total_charge() == 0 and set(dipeptide.regions) == {"protein"}
