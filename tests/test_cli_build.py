"""`mlmm build`: recipes, options, the summary line, and bad input leaving nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from openff.toolkit.utils import get_data_file_path

from mlmm import MolecularSystem
from mlmm.cli import main

SYSTEMS = Path(__file__).resolve().parents[1] / "systems"
TOLUENE_SDF = get_data_file_path("molecules/toluene.sdf")


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("recipe, n_ligand, ligand_charge", [
    ("toluene-water", 15, 0),
    ("acetate-water", 7, -1),
    pytest.param("t4l-toluene", 15, 0, marks=pytest.mark.slow),
])
def test_build_each_recipe(recipe, n_ligand, ligand_charge, tmp_path, capsys):
    out = tmp_path / recipe
    assert main(["build", str(SYSTEMS / f"{recipe}.yaml"), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "build: parametrizing" in captured.err and "build: done" in captured.err  # the stage display
    summary = captured.out.strip().splitlines()[-1]
    built = MolecularSystem.load(out)
    assert summary.startswith(f"built {out}: {built.n_atoms} atoms, box ")
    assert "net charge +0 e" in summary and f"ligand {n_ligand}" in summary
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "system.xml", "topology.pdb"]
    assert built.total_charge() == 0 and built.total_charge(built.regions["ligand"]) == ligand_charge
    assert json.loads((out / "metadata.json").read_text())["metadata"]["recipe"]["name"] == recipe


def test_options_without_recipe(tmp_path, capsys):
    out = tmp_path / "ethanol"
    code = main(["build", "--ligand", "CCO", "--no-solvent", "--hmr", "3.0", "--constraints", "none",
                 "--forcefield", "openff-2.1.0", "-q", "-o", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # --quiet: no stage display
    assert captured.out.strip() == f"built {out}: 9 atoms, vacuum, net charge +0 e (ligand 9)"
    built = MolecularSystem.load(out)
    meta = built.metadata
    assert (meta["forcefields"]["small_molecule"], meta["hydrogen_mass_amu"], meta["constraints"]) == \
        ("openff-2.1.0", 3.0, "none")
    assert built.system.getNumConstraints() == 0 and not built.is_periodic


def test_options_override_the_recipe(tmp_path, capsys):
    out = tmp_path / "toluene-box"
    code = main(["build", str(SYSTEMS / "toluene-water.yaml"), "--box-size", "2.5", "--ionic-strength", "0",
                 "--cutoff", "1.0", "-q", "-o", str(out)])
    assert code == 0
    assert "box 2.500 x 2.500 x 2.500 nm" in capsys.readouterr().out
    meta = MolecularSystem.load(out).metadata
    assert (meta["box_size_nm"], meta["ionic_strength_molar"], meta["nonbonded_cutoff_nm"]) == ([2.5] * 3, 0.0, 1.0)


def test_existing_output_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "acetate"
    out.mkdir()
    (out / "keep.txt").write_text("untouched")
    assert main(["build", "--ligand", "CC(=O)[O-]", "--no-solvent", "-q", "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert _leftovers(out) == ["keep.txt"]
    assert main(["build", "--ligand", "CC(=O)[O-]", "--no-solvent", "-q", "--overwrite", "-o", str(out)]) == 0
    assert _leftovers(out) == ["metadata.json", "system.xml", "topology.pdb"]


@pytest.mark.parametrize("arguments, message", [
    (["--ligand", "missing.sdf"], "ligand file missing.sdf does not exist"),
    (["--ligand", TOLUENE_SDF, "--padding", "-1"], "padding = -1.0 nm is negative"),
    (["--ligand", TOLUENE_SDF, "--forcefield", "openff-0.0.1"], "unknown small-molecule force field 'openff-0.0.1'"),
    (["--ligand", "CC(F)(Cl)Br"], "undefined stereochemistry"),
    (["--protein", get_data_file_path("proteins/MainChain_ALA_ALA_no_hydrogens.pdb")], "has no hydrogens"),
    ([], "nothing to build"),
])
def test_bad_input_gives_one_line_and_no_output(arguments, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["build", *arguments, "-q", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mlmm build: error: ") and message in err[0]
    assert _leftovers(tmp_path) == []  # no output folder, no partial folder


@pytest.mark.slow  # a cold interpreter start (torch, OpenMM, OpenFF imports)
def test_console_script_reports_errors_without_traceback(tmp_path):
    mlmm = Path(sys.executable).with_name("mlmm")
    result = subprocess.run([str(mlmm), "build", "--ligand", str(tmp_path / "x.sdf"), "-o", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "x.sdf does not exist" in result.stderr
    assert not (tmp_path / "o").exists()
