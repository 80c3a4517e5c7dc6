"""The ani2x and mace-off plugins: their real loading code and architectures.

Their pretrained weights are downloaded by TorchANI / mace-torch on first use and cannot be
fetched here, so these tests use the real architectures with GENERATED (random) weights,
saved to files and loaded through the plugins' ``weights=PATH`` option, and check the
offline failure. The region models are compared with the packages' own evaluation paths
(TorchANI's model called directly; mace-torch's ASE calculator with its own neighbour list).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from generated_models import save_generated_ani2x, save_generated_mace_off

from mlmm.errors import InputError, ModelUnavailableError
from mlmm.potentials import load_plugin
from mlmm.units import ANGSTROM_PER_NM, KJ_PER_MOL_PER_EV

torchani = pytest.importorskip("torchani", reason="package torchani not installed (pip install 'mlmm[models]')")


@pytest.fixture(scope="module")
def ani_weights(tmp_path_factory):
    return save_generated_ani2x(tmp_path_factory.mktemp("ani") / "ani2x_generated.pt", seed=1)


@pytest.fixture(scope="module")
def mace_weights(tmp_path_factory):
    pytest.importorskip("mace", reason="package mace-torch not installed (pip install 'mlmm[models]')")
    return save_generated_mace_off(tmp_path_factory.mktemp("mace") / "mace_off_generated.model", seed=1)


def energy_and_forces(model, xyz_nm):
    x = torch.tensor(xyz_nm, requires_grad=True)
    out = model(x)
    (gradient,) = torch.autograd.grad(out["energy"], x)
    return out, -gradient.numpy()


def test_ani2x_ensemble_and_member_match_torchani(toluene, ani_weights):
    from mlmm_plugins.ani2x import ani2x_architecture

    numbers, xyz = toluene
    reference = ani2x_architecture()
    reference.load_state_dict(torch.load(ani_weights, weights_only=True))
    species = torch.tensor(numbers)[None]
    coords = torch.tensor(xyz * ANGSTROM_PER_NM, dtype=torch.float32)[None].requires_grad_(True)
    hartree = torchani.units.HARTREE_TO_KJOULEPERMOL

    plugin = load_plugin("ani2x")
    out, forces = energy_and_forces(plugin.create_model(numbers, 0, weights=ani_weights), xyz)
    ensemble = reference((species, coords), ensemble_values=True).energies[:, 0]
    (gradient,) = torch.autograd.grad(ensemble.mean(), coords)
    assert float(out["energy"]) == pytest.approx(float(ensemble.mean()) * hartree, rel=1e-6)
    assert float(out["energy_std"]) == pytest.approx(float(ensemble.std()) * hartree, rel=1e-3)
    np.testing.assert_allclose(forces, -gradient[0].numpy() * hartree * ANGSTROM_PER_NM, rtol=1e-4, atol=0.05)

    out3, _ = energy_and_forces(plugin.create_model(numbers, 0, weights=ani_weights, member=3), xyz)
    assert float(out3["energy"]) == pytest.approx(float(ensemble[3]) * hartree, rel=1e-6)
    assert "energy_std" not in out3


def test_mace_off_matches_mace_calculator(toluene, mace_weights):
    import ase
    from mace.calculators import MACECalculator

    numbers, xyz = toluene
    out, forces = energy_and_forces(load_plugin("mace-off").create_model(numbers, 0, weights=mace_weights), xyz)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calculator = MACECalculator(model_paths=str(mace_weights), device="cpu", default_dtype="float32")
    atoms = ase.Atoms(numbers=numbers, positions=xyz * ANGSTROM_PER_NM)
    atoms.calc = calculator
    assert float(out["energy"]) == pytest.approx(atoms.get_potential_energy() * KJ_PER_MOL_PER_EV, rel=1e-6)
    reference_forces = atoms.get_forces() * KJ_PER_MOL_PER_EV * ANGSTROM_PER_NM
    np.testing.assert_allclose(forces, reference_forces, rtol=1e-3, atol=1e-3 * np.abs(reference_forces).max())


def test_offline_without_weights_is_a_clear_error(toluene, tmp_path, monkeypatch):
    numbers, _ = toluene
    monkeypatch.setenv("TORCHANI_DATA_DIR", str(tmp_path / "torchani"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("ani2x", "mace-off"):
        plugin = load_plugin(name)
        assert not plugin.weights_available()
        assert "weights=PATH" in plugin.status()
    with pytest.raises(ModelUnavailableError, match="pass weights=PATH"):
        load_plugin("ani2x").create_model(numbers, 0)
    if load_plugin("mace-off").status().startswith("package"):
        pytest.skip("mace-torch not installed")
    monkeypatch.setattr("mace.calculators.foundations_models._urlretrieve_with_timeout", _no_network)
    with pytest.raises(ModelUnavailableError, match="pass weights=PATH"):
        load_plugin("mace-off").create_model(numbers, 0)


def _no_network(url, path, *args, **kwargs):
    raise OSError(f"no route to {url}")  # what an offline machine answers, without waiting for a timeout


def test_neutral_only_and_element_coverage(toluene, ani_weights):
    numbers, _ = toluene
    for name in ("ani2x", "mace-off"):
        plugin = load_plugin(name)
        with pytest.raises(InputError, match="neutral regions only.*total charge -1"):
            plugin.create_model(numbers, -1, weights=ani_weights)
    with pytest.raises(InputError, match="does not cover element.*Br"):
        load_plugin("ani2x").create_model([6, 35, 1, 1, 1], 0, weights=ani_weights)
    with pytest.raises(InputError, match="member 8 does not exist"):
        load_plugin("ani2x").create_model(numbers, 0, weights=ani_weights, member=8)
    with pytest.raises(InputError, match="size 'huge' is unknown"):
        load_plugin("mace-off").create_model(numbers, 0, size="huge")
