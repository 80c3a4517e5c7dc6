"""Protocol presets and files, lambda states, FreeSolv access, seeds: fast checks, no simulation."""

from __future__ import annotations

import numpy as np
import openmm.unit as u
import pytest
import torch

import mlmm  # noqa: F401  (imports torch before openmm)
import openmm

from mlmm.errors import InputError
from mlmm.freeenergy import (
    PRESETS, Leg, Protocol, SerializedSystem, decoupling_leg, decoupling_states, devset_ids, endstate_leg,
    endstate_states, error_statistics, freesolv_entries, freesolv_path, load_freesolv, task_seed,
    with_freesolv_references,
)
from mlmm.freeenergy.states import describe_state


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_ordered_by_cost(name):
    protocol = Protocol.preset(name)
    assert protocol.name == name
    assert protocol.endstate_lambdas[0] == 0.0 and protocol.endstate_lambdas[-1] == 1.0
    costs = {n: Protocol.preset(n).steps_per_window for n in PRESETS}
    assert costs["smoke"] < costs["quick"] < costs["standard"] < costs["production"]


def test_protocol_yaml_round_trip_and_overrides(tmp_path):
    quick = Protocol.preset("quick")
    path = tmp_path / "p.yaml"
    quick.replace(samples_per_window=77, temperature=310 * u.kelvin).to_yaml(path)
    loaded = Protocol.load(path)
    assert loaded.samples_per_window == 77 and loaded.temperature == pytest.approx(310.0)
    assert loaded.sterics_lambdas == quick.sterics_lambdas
    (tmp_path / "q.yaml").write_text("preset: smoke\nseed: 5\ntimestep: 0.001\n")
    small = Protocol.load(tmp_path / "q.yaml")
    assert (small.seed, small.timestep, small.samples_per_window) == (5, 0.001, PRESETS["smoke"]["samples_per_window"])
    assert quick.kT == pytest.approx(0.00831446261815324 * 298.15)


@pytest.mark.parametrize("changes, words", [
    ({"endstate_lambdas": (0.0, 0.5)}, "endstate_lambdas"),
    ({"sterics_lambdas": (1.0, 0.5, 0.7, 0.0)}, "monotonically"),
    ({"electrostatics_lambdas": (0.0, 1.0)}, "electrostatics_lambdas"),
    ({"timestep": -0.002}, "timestep"),
    ({"neq_switches": 500}, "neq_switches"),
    ({"pressure": 0.0}, "pressure"),
    ({"samples": 3}, "unknown protocol field"),
    ({"timestep": "2 parsecs"}, "timestep"),
    ({"temperature": "300K"}, "temperature = '300K' is not a number"),
    ({"samples_per_window": "60"}, "samples_per_window = '60' must be a whole number"),
    ({"steps_per_sample": 2.5}, "steps_per_sample"),
    ({"sterics_lambdas": ["one", 0.0]}, "sterics_lambdas"),
])
def test_bad_protocols_are_refused_with_the_field_named(changes, words):
    with pytest.raises(InputError, match=words):
        Protocol.preset("quick").replace(**changes)


def test_protocol_time_step_with_units_as_mlmm_run_takes_it(tmp_path):
    (tmp_path / "p.yaml").write_text("preset: quick\ntimestep: 2fs\nfriction: 2\n")
    loaded = Protocol.load(tmp_path / "p.yaml")
    assert loaded.timestep == pytest.approx(0.002) and loaded.friction == 2.0
    assert Protocol.preset("smoke").replace(timestep=1 * u.femtosecond).timestep == pytest.approx(0.001)
    assert Protocol.preset("smoke").replace(samples_per_window=30.0).samples_per_window == 30


def test_bad_protocol_names_and_files(tmp_path):
    with pytest.raises(InputError, match="preset"):
        Protocol.load("fastest")
    (tmp_path / "bad.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="mapping"):
        Protocol.load(tmp_path / "bad.yaml")


def test_lambda_states():
    states = decoupling_states((1.0, 0.5, 0.0), (1.0, 0.5, 0.0))
    assert [describe_state(s) for s in states] == [
        {"lambda_electrostatics": 1.0, "lambda_sterics": 1.0},
        {"lambda_electrostatics": 0.5, "lambda_sterics": 1.0},
        {"lambda_electrostatics": 0.0, "lambda_sterics": 1.0},
        {"lambda_electrostatics": 0.0, "lambda_sterics": 0.5},
        {"lambda_electrostatics": 0.0, "lambda_sterics": 0.0},
    ]
    assert [describe_state(s) for s in endstate_states((0.0, 1.0))] == [{"lambda_ml": 0.0}, {"lambda_ml": 1.0}]
    with pytest.raises(ValueError):
        endstate_states((0.0, 1.5))


def test_task_seeds_depend_on_labels_not_order():
    seeds = {task_seed(7, "mol", "leg", k) for k in range(200)}
    assert len(seeds) == 200 and all(1 <= s < 2**30 for s in seeds)
    assert task_seed(7, "mol", "leg", 3) == task_seed(7, "mol", "leg", 3) != task_seed(8, "mol", "leg", 3)


def test_freesolv_database_and_devset():
    database = load_freesolv()
    assert len(database) == 642
    methanol = database["mobley_1636752"]
    assert methanol.smiles == "CO"
    assert methanol.experimental == pytest.approx(-5.10 * 4.184) and methanol.gaff == pytest.approx(-3.49 * 4.184)
    # the database's GAFF column over all 642 molecules (RMSE 1.54, MUE 1.11 kcal/mol)
    stats = error_statistics([e.gaff for e in database.values()], [e.experimental for e in database.values()])
    assert stats["rmse_kcal_per_mol"] == pytest.approx(1.54, abs=0.01)
    assert stats["mue_kcal_per_mol"] == pytest.approx(1.11, abs=0.01)

    ids = devset_ids()
    assert len(ids) == len(set(ids)) == 10
    entries = freesolv_entries(ids)
    elements = set()
    for entry in entries:
        from rdkit import Chem

        molecule = Chem.MolFromSmiles(entry.smiles)
        assert Chem.GetFormalCharge(molecule) == 0, entry
        elements |= {atom.GetSymbol() for atom in molecule.GetAtoms()}
    assert elements >= {"C", "N", "O", "F", "P", "S", "Cl", "Br", "I"}


def test_freesolv_location_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("MLMM_FREESOLV", str(tmp_path / "missing.txt"))
    with pytest.raises(InputError, match="MLMM_FREESOLV"):
        freesolv_path()
    bad = tmp_path / "bad.txt"
    bad.write_text("mobley_1; CO; methanol\n")
    with pytest.raises(InputError, match="fields"):
        load_freesolv(bad)
    monkeypatch.delenv("MLMM_FREESOLV")
    with pytest.raises(InputError, match="mobley_0000"):
        freesolv_entries(["mobley_0000"])


def test_smiles_find_their_freesolv_entries(tmp_path, monkeypatch, capsys):
    """Any SMILES of a FreeSolv molecule finds its entry (canonical SMILES), so `mlmm fe hydration
    --smiles` compares with experiment; others stay SMILES; without a database they all do."""
    from mlmm.cli.fe import _smiles_with_references

    found = with_freesolv_references(["OC", "c1ccccc1C", "CC(C)(C)C(C)(C)C(C)(C)C(C)(C)C"])
    assert [getattr(entry, "id", entry) for entry in found] == [
        "mobley_1636752", "mobley_1873346", "CC(C)(C)C(C)(C)C(C)(C)C(C)(C)C"]
    assert found[1].name == "toluene" and found[1].experimental == pytest.approx(-0.90 * 4.184)
    assert with_freesolv_references(["C1CC"]) == ["C1CC"]  # unreadable (an unclosed ring): matches nothing
    monkeypatch.setenv("MLMM_FREESOLV", str(tmp_path / "missing.txt"))
    assert _smiles_with_references(["OC"], None) == ["OC"]
    assert "FreeSolv database not found" in capsys.readouterr().err
    with pytest.raises(InputError, match="missing.txt"):
        _smiles_with_references(["OC"], tmp_path / "missing.txt")


def test_error_statistics():
    stats = error_statistics([1.0, -1.0, 3.0], [0.0, 0.0, 0.0])
    assert stats["rmse"] == pytest.approx(np.sqrt(11 / 3)) and stats["mue"] == pytest.approx(5 / 3)
    assert stats["mse"] == pytest.approx(1.0) and stats["rmse_kcal_per_mol"] == pytest.approx(np.sqrt(11 / 3) / 4.184)


class Quadratic(torch.nn.Module):
    def forward(self, positions):
        return (positions**2).sum()


def test_systems_with_a_torch_force_travel_as_recipes_not_xml():
    import openmmtorch

    system = openmm.System()
    system.addParticle(1.0)
    system.addForce(openmmtorch.TorchForce(torch.jit.script(Quadratic())))
    with pytest.raises(InputError, match="MixedSystemRecipe"):
        SerializedSystem.from_system(system)


def test_leg_construction_errors(toluene_vacuum):
    protocol = Protocol.preset("smoke")
    with pytest.raises(InputError, match="at least two"):
        Leg("one", SerializedSystem.from_system(toluene_vacuum.system), toluene_vacuum.positions, None,
            endstate_states((0.0,)))
    with pytest.raises(InputError, match="matches no atoms"):
        decoupling_leg(toluene_vacuum, protocol, region="resname XYZ")
    with pytest.raises(InputError, match="ML model"):
        endstate_leg(toluene_vacuum, None, "mechanical", protocol)
    # the solute alone in vacuum: only the electrostatics windows (sterics would all be one state)
    assert decoupling_leg(toluene_vacuum, protocol).n_states == len(protocol.electrostatics_lambdas)


def test_an_unknown_platform_is_named_when_a_task_starts(toluene_vacuum):
    from mlmm.freeenergy.sampling import create_context

    protocol = Protocol.preset("smoke").replace(platform="Quantum")
    with pytest.raises(InputError, match="platform = 'Quantum' is not available here; available: Reference, CPU"):
        create_context(toluene_vacuum.system, openmm.VerletIntegrator(0.001), protocol)
