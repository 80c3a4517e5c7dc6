"""The plugin contract (mlmm.potentials), discovery through entry points, and `mlmm models`."""

from __future__ import annotations

import subprocess
import sys

import openmmtorch
import pytest
import torch

from mlmm.cli import main
from mlmm.errors import InputError
from mlmm.potentials import (ENTRY_POINT_GROUP, PotentialPlugin, check_options, energy_and_forces, for_energy_only,
                             load_plugin, plugin_names)


def test_torch_is_the_pinned_version_that_openmmtorch_needs():
    assert torch.__version__.split("+")[0] == "2.9.1"
    assert hasattr(openmmtorch, "TorchForce")


def test_importing_mlmm_and_openmmtorch_prints_no_deprecation_notice():
    """openmmtorch imports the deprecated simtk.openmm alias, which logs a warning to stderr at first import;
    ``import mlmm`` imports openmmtorch without it, and other warnings still reach the root logger."""
    script = ("import logging, mlmm, openmmtorch, simtk.openmm\n"
              "logging.getLogger().warning('a warning of the user')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert "simtk" not in result.stderr
    assert "a warning of the user" in result.stderr


def test_all_four_plugins_are_found_through_entry_points():
    from importlib.metadata import entry_points

    declared = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert declared["aimnet2"] == "mlmm_plugins.aimnet2:AIMNet2Plugin"
    assert {"aimnet2", "torchscript", "ani2x", "mace-off"} <= set(plugin_names())
    for name in ("aimnet2", "torchscript", "ani2x", "mace-off"):
        plugin = load_plugin(name)
        assert isinstance(plugin, PotentialPlugin) and plugin.name == name


def test_unknown_model_names_the_installed_ones():
    with pytest.raises(InputError, match="unknown model 'aimnet3'.*aimnet2.*torchscript"):
        load_plugin("aimnet3")


def test_aimnet2_weights_ship_with_the_environment():
    plugin = load_plugin("aimnet2")
    assert plugin.weights_available() and plugin.status() == "ready"
    assert plugin.supports_charge and plugin.provides_charges


def test_check_region_names_elements_and_charge():
    with pytest.raises(InputError, match="does not cover element.*Na, K.*covers H, B, C"):
        load_plugin("aimnet2").check_region([6, 11, 19], 0)
    with pytest.raises(InputError, match="neutral regions only.*total charge \\+2 e"):
        load_plugin("ani2x").check_region([6, 1, 1, 1, 1], 2)
    load_plugin("aimnet2").check_region([6, 8, 8], -1)  # charged regions are fine for AIMNet2


def test_unknown_options_are_rejected_with_the_valid_ones():
    check_options("demo", {"path": 1, "positions": None}, ("path",))
    with pytest.raises(InputError, match="model 'demo' has no option\\(s\\) pth; its options are path"):
        check_options("demo", {"pth": 1}, ("path",))


def test_mlmm_models_lists_every_plugin(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("aimnet2", "torchscript", "ani2x", "mace-off"):
        assert f"{name}: " in out
    aimnet2 = out[out.index("aimnet2:"):out.index("ani2x:")]
    assert "H B C N O F Si P S Cl As Se Br I" in aimnet2
    assert "charged regions: yes    atomic charges: yes" in aimnet2
    assert "weights present: yes - ready" in aimnet2
    ani2x = out[out.index("ani2x:"):out.index("mace-off:")]
    assert "charged regions: no" in ani2x and "weights present:" in ani2x


def test_for_energy_only_sets_the_contract_attribute_where_a_model_has_it():
    class EnergyOnly(torch.nn.Module):
        def forward(self, positions: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"energy": (positions * positions).sum()}

    plain = torch.jit.script(EnergyOnly())
    assert for_energy_only(plain) is plain and not hasattr(plain, "energy_only")
    model = load_plugin("aimnet2").create_model([1, 1], 0)
    assert model.energy_only is False
    assert for_energy_only(model) is model and model.energy_only is True


def test_energy_and_forces_by_autograd_or_from_the_model():
    class Harmonic(torch.nn.Module):
        def forward(self, positions: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"energy": (positions * positions).sum()}

    positions = torch.tensor([[0.1, -0.2, 0.3], [0.05, 0.0, -0.4]], dtype=torch.float64)
    energy, forces = energy_and_forces(torch.jit.script(Harmonic()), positions)
    assert float(energy) == pytest.approx(0.3025) and torch.allclose(forces, -2.0 * positions)
    numbers = [8, 1, 1]
    water = torch.tensor([[0.0, 0.0, 0.0], [0.0957, 0.0, 0.0], [-0.024, 0.0927, 0.0]], dtype=torch.float64)
    reference = energy_and_forces(load_plugin("aimnet2").create_model(numbers, 0), water)
    own = energy_and_forces(for_energy_only(load_plugin("aimnet2").create_model(numbers, 0)), water)
    assert float(own[0]) == pytest.approx(float(reference[0]), abs=1e-3)  # float32 rounding (oneDNN or dense products)
    assert torch.allclose(own[1], reference[1], rtol=1e-4, atol=0.01)
    assert not own[1].requires_grad and not reference[1].requires_grad
