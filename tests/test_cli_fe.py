"""``mlmm fe``: end-state and hydration commands end to end with a tiny protocol, and their errors."""

from __future__ import annotations

import json

import pytest

import mlmm  # noqa: F401  (imports torch before openmm)

from mlmm.cli import main
from mlmm.freeenergy import Protocol

TINY_PROTOCOL = """\
preset: smoke
minimization_steps: 20
equilibration_steps: 20
samples_per_window: 10
steps_per_sample: 5
electrostatics_lambdas: [1.0, 0.0]
sterics_lambdas: [1.0, 0.5, 0.0]
endstate_lambdas: [0.0, 0.5, 1.0]
neq_switches: 3
neq_steps: 5
"""


@pytest.fixture()
def tiny_protocol(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_PROTOCOL)
    return path


def test_protocol_command_prints_a_loadable_preset(capsys, tmp_path):
    assert main(["fe", "protocol", "production"]) == 0
    path = tmp_path / "production.yaml"
    path.write_text(capsys.readouterr().out)
    assert Protocol.load(path) == Protocol.preset("production")


def test_endstate_command_writes_json_and_plots(toluene_vacuum_dir, tiny_protocol, tmp_path, capsys):
    out = tmp_path / "endstate.json"
    plots = tmp_path / "plots"
    code = main(["fe", "endstate", str(toluene_vacuum_dir), "--model", "aimnet2", "--protocol", str(tiny_protocol),
                 "--neq", "--json", str(out), "--plots", str(plots), "-q"])
    assert code == 0
    assert "mechanical: dG(MM -> ML/MM) =" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["units"] == "kJ/mol" and data["model"] == "aimnet2"
    leg = data["legs"]["mechanical"]
    assert data["dG"]["mechanical"] == leg["mbar"]["dG"]
    assert len(leg["mbar"]["overlap"]) == 3 and len(leg["mbar"]["dudl_mean"]) == 3
    assert len(leg["neq"]["forward_work"]) == len(leg["neq"]["reverse_work"]) == 3
    assert {"bar", "jarzynski_forward", "jarzynski_reverse"} <= set(leg["neq"])
    names = {p.name for p in plots.iterdir()}
    assert names == {f"endstate-mechanical-{kind}.png" for kind in ("overlap", "convergence", "dudl", "work")}


def test_hydration_command_mm_only(tiny_protocol, tmp_path, capsys):
    out = tmp_path / "hydration.json"
    code = main(["fe", "hydration", "--smiles", "CO", "--model", "none", "--protocol", str(tiny_protocol),
                 "--json", str(out), "-q"])
    assert code == 0
    captured = capsys.readouterr()
    assert "dG_hyd in kcal/mol" in captured.out
    assert "CO = mobley_1636752 (methanol)" in captured.err  # the SMILES was found in FreeSolv
    data = json.loads(out.read_text())
    (molecule,) = data["molecules"]
    assert molecule["id"] == "mobley_1636752" and molecule["dG_mlmm"] == {}
    assert molecule["experimental"]["value"] == pytest.approx(-5.10 * 4.184)
    assert set(molecule["legs"]) == {"solvent-decoupling", "vacuum-decoupling"}
    assert molecule["dG_mm"]["error"] > 0
    assert data["statistics"]["mm"]["n"] == 1
    assert data["protocol"]["samples_per_window"] == 10


@pytest.mark.parametrize("argv, words", [
    (["fe", "hydration", "--freesolv-ids", "mobley_0", "--freesolv", "/nonexistent/database.txt"], "FreeSolv database not found"),
    (["fe", "hydration", "--freesolv-ids", "mobley_0"], "mobley_0"),
    (["fe", "hydration", "--smiles", "CO", "--protocol", "fastest"], "preset"),
    (["fe", "endstate", "/nonexistent/system"], "neither a saved system folder"),
    (["fe", "endstate", "/nonexistent/system", "--model", "none"], "needs an ML model"),
])
def test_errors_are_one_line_with_status_2(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_json_path_that_is_a_folder_is_refused_before_any_work(tmp_path, capsys):
    assert main(["fe", "hydration", "--smiles", "CO", "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
