"""The torchscript plugin: a user's own TorchScript region model, checked on load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlmm.errors import InputError
from mlmm.potentials import load_plugin

KJ_PER_EV = 96.48533212331002


@pytest.fixture(scope="module")
def aimnet2_member(toluene):
    return load_plugin("aimnet2").create_model(toluene[0], 0)


class Rescaled(torch.nn.Module):
    """A region model whose energy is in other units or that reads positions in other units:
    the mistakes the unit check must catch."""

    def __init__(self, inner, energy_factor: float, length_factor: float):
        super().__init__()
        self.inner = inner
        self.energy_factor = energy_factor
        self.length_factor = length_factor

    def forward(self, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"energy": self.inner(positions * self.length_factor)["energy"] * self.energy_factor}


class WrongSignature(torch.nn.Module):
    def forward(self, positions: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
        return (positions**2).sum()


class DetachedEnergy(torch.nn.Module):
    def forward(self, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"energy": (positions.detach() ** 2).sum()}


class NotFinite(torch.nn.Module):
    def forward(self, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"energy": (positions**2).sum() / 0.0}


def save(module, path):
    torch.jit.script(module).save(str(path))
    return path


def test_a_saved_region_model_loads_and_evaluates_identically(toluene, aimnet2_member, tmp_path):
    path = save(aimnet2_member, tmp_path / "model.pt")
    model = load_plugin("torchscript").create_model(toluene[0], 0, path=path, positions=toluene[1])
    x = torch.tensor(toluene[1])
    assert torch.equal(model(x)["energy"], aimnet2_member(x)["energy"])
    assert torch.equal(model(x)["charges"], aimnet2_member(x)["charges"])


@pytest.mark.parametrize(
    "energy_factor, length_factor",
    [(1 / KJ_PER_EV, 1.0), (1 / 2625.4996, 1.0), (1.0, 10.0)],
    ids=["eV", "Hartree", "positions-10x-too-large"],
)
def test_implausible_units_are_caught_with_the_fix(toluene, aimnet2_member, tmp_path, energy_factor, length_factor):
    path = save(Rescaled(aimnet2_member, energy_factor, length_factor), tmp_path / "rescaled.pt")
    with pytest.raises(InputError, match="implausible units.*multiply its energy by 96.4853") as error:
        load_plugin("torchscript").create_model(toluene[0], 0, path=path, positions=toluene[1])
    assert "multiply the positions it receives by 10" in str(error.value)


def test_kj_per_mol_model_in_a_wrapper_passes(toluene, aimnet2_member, tmp_path):
    path = save(Rescaled(aimnet2_member, 1.0, 1.0), tmp_path / "same.pt")
    model = load_plugin("torchscript").create_model(toluene[0], 0, path=path, positions=toluene[1])
    assert set(model(torch.tensor(toluene[1]))) == {"energy"}


def test_without_positions_only_a_warning_about_units(toluene, aimnet2_member, tmp_path):
    path = save(Rescaled(aimnet2_member, 1 / KJ_PER_EV, 1.0), tmp_path / "ev.pt")
    with pytest.warns(UserWarning, match="units of ev.pt were not checked"):
        load_plugin("torchscript").create_model(toluene[0], 0, path=path)


@pytest.mark.parametrize(
    "module, message",
    [
        (WrongSignature(), r"forward\('Tensor', 'Tensor'\) -> Tensor; mlmm needs forward\(positions: Tensor\)"),
        (DetachedEnergy(), "does not depend differentiably on the positions"),
        (NotFinite(), "non-finite energy"),
    ],
)
def test_bad_files_are_rejected(toluene, tmp_path, module, message):
    path = save(module, tmp_path / "bad.pt")
    with pytest.raises(InputError, match=message):
        load_plugin("torchscript").create_model(toluene[0], 0, path=path, positions=toluene[1])


def test_region_mismatch_and_missing_files(toluene, aimnet2_member, tmp_path):
    plugin = load_plugin("torchscript")
    path = save(aimnet2_member, tmp_path / "model.pt")
    reordered = list(reversed(toluene[0]))
    with pytest.raises(InputError, match="was built for atomic numbers"):
        plugin.create_model(reordered, 0, path=path)
    with pytest.raises(InputError, match="built for total charge"):
        plugin.create_model(toluene[0], 1, path=path)
    with pytest.raises(InputError, match="needs the file: pass path=FILE"):
        plugin.create_model(toluene[0], 0)
    with pytest.raises(InputError, match="does not exist"):
        plugin.create_model(toluene[0], 0, path=tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("not a model")
    with pytest.raises(InputError, match="is not a TorchScript file"):
        plugin.create_model(toluene[0], 0, path=tmp_path / "text.pt")
    with pytest.raises(InputError, match=r"positions for the unit check have shape \(3, 3\)"):
        plugin.create_model(toluene[0], 0, path=path, positions=np.zeros((3, 3)))


def test_create_mixed_system_checks_the_units_of_a_file_on_the_built_geometry(toluene_water, tmp_path):
    """The same unit check through create_mixed_system (and so `mlmm run --model torchscript`),
    which passes the region's coordinates: a model in eV is refused, one in kJ/mol is used."""
    from mlmm.embedding.mixed import create_mixed_system

    numbers = toluene_water.atomic_numbers[toluene_water.regions["ligand"]].tolist()
    member = load_plugin("aimnet2").create_model(numbers, 0)
    in_ev = save(Rescaled(member, 1 / KJ_PER_EV, 1.0), tmp_path / "ev.pt")
    with pytest.raises(InputError, match="ev.pt gives implausible units"):
        create_mixed_system(toluene_water, "torchscript", model_options={"path": str(in_ev)})
    in_kj = save(Rescaled(member, 1.0, 1.0), tmp_path / "kj.pt")
    mixed = create_mixed_system(toluene_water, "torchscript", model_options={"path": str(in_kj)})
    assert mixed.model_options == {"path": str(in_kj)}


def test_a_file_that_returns_charges_serves_the_electrostatic_embedding(toluene_water, tmp_path):
    """A file's charges are found from its output: the saved AIMNet2 member gives the same
    electrostatic ML/MM energy as the aimnet2 plugin; a file without charges is refused."""
    import openmm

    from mlmm.embedding.mixed import create_mixed_system

    numbers = toluene_water.atomic_numbers[toluene_water.regions["ligand"]].tolist()
    member = load_plugin("aimnet2").create_model(numbers, 0)
    with_charges = save(member, tmp_path / "member.pt")
    energies = []
    for model, options in (("torchscript", {"path": str(with_charges)}), ("aimnet2", {})):
        mixed = create_mixed_system(toluene_water, model, embedding="electrostatic", model_options=options)
        context = openmm.Context(mixed.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
        context.setPositions(toluene_water.positions)
        energies.append(context.getState(getEnergy=True).getPotentialEnergy()._value)
    assert energies[0] == pytest.approx(energies[1], abs=1e-3)
    without_charges = save(Rescaled(member, 1.0, 1.0), tmp_path / "energy-only.pt")
    with pytest.raises(InputError, match="returns no 'charges', which electrostatic embedding needs"):
        create_mixed_system(toluene_water, "torchscript", embedding="electrostatic",
                            model_options={"path": str(without_charges)})
