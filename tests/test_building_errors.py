"""Bad input to the builder: one clear InputError naming the problem and the fix."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from openff.toolkit.utils import get_data_file_path
from rdkit import Chem

from mlmm import InputError
from mlmm.building import build_from_recipe, build_system, load_recipe

TOLUENE_SDF = get_data_file_path("molecules/toluene.sdf")
DIPEPTIDE_PDB = get_data_file_path("proteins/MainChain_ALA_ALA.pdb")  # ACE-ALA-ALA-NME with hydrogens


def _build_fails(match: str, *args, **kwargs) -> str:
    with pytest.raises(InputError, match=match) as caught:
        build_system(*args, progress=False, **kwargs)
    return str(caught.value)


def test_missing_ligand_file(tmp_path):
    message = _build_fails("does not exist", [str(tmp_path / "ligand.sdf")], solvent=False)
    assert "ligand.sdf" in message and "check the path" in message


def test_missing_protein_file(tmp_path):
    _build_fails(r"protein file .*protein\.pdb does not exist", protein=tmp_path / "protein.pdb")


def test_unparseable_sdf(tmp_path):
    garbage = tmp_path / "broken.sdf"
    garbage.write_text("this is not\na molecule\n$$$$\n")
    message = _build_fails("cannot read a molecule", [str(garbage)], solvent=False)
    assert "broken.sdf" in message and "valid SDF" in message


def test_ligand_file_in_an_unread_format(tmp_path):
    path = tmp_path / "toluene.pdb"
    path.write_text(Path(get_data_file_path("molecules/toluene.pdb")).read_text())
    _build_fails(r"format \.pdb, which is not read; give an SDF, MOL or MOL2", [str(path)], solvent=False)


def test_text_that_is_neither_file_nor_smiles():
    _build_fails("neither an existing file nor a valid SMILES", ["c1ccccc1XX"], solvent=False)


def test_ligand_without_hydrogens(tmp_path):
    heavy_only = Chem.MolFromMolFile(TOLUENE_SDF, removeHs=True)
    path = tmp_path / "toluene_no_h.sdf"
    Chem.MolToMolFile(heavy_only, str(path))
    message = _build_fails("has no hydrogens", [str(path)], solvent=False)
    assert "7 atoms in the file, 15 with all hydrogens" in message and "protonate it" in message


def test_openff_molecule_with_unfilled_valences():
    from openff.toolkit import Molecule

    methyl = Molecule()
    carbon = methyl.add_atom(6, 0, False)
    for _ in range(3):
        methyl.add_bond(carbon, methyl.add_atom(1, 0, False), 1, False)
    message = _build_fails("lacks hydrogens: atoms C1 have unfilled valences", [methyl], solvent=False)
    assert "add explicit hydrogens" in message


def test_ligand_with_undefined_stereochemistry():
    message = _build_fails("undefined stereochemistry", ["CC(F)(Cl)Br"], solvent=False)
    assert "CC(F)(Cl)Br" in message and "@" in message


def test_protein_without_hydrogens_and_no_add_hydrogens():
    path = get_data_file_path("proteins/MainChain_ALA_ALA_no_hydrogens.pdb")
    message = _build_fails("has no hydrogens", protein=path, solvent=False)
    assert "--add-hydrogens" in message


def test_protein_with_some_hydrogens_missing(tmp_path):
    lines = Path(DIPEPTIDE_PDB).read_text().splitlines()
    dropped = [line for line in lines
               if not (line.startswith("ATOM") and line[12:16].strip() == "HA" and line[22:26].strip() == "2")]
    assert len(dropped) == len(lines) - 1
    path = tmp_path / "missing_ha.pdb"
    path.write_text("\n".join(dropped) + "\n")
    _build_fails("could not be matched to known chemistry", protein=path, solvent=False)


def _toluene_posed_near_alanine_ca(tmp_path, offset_angstrom) -> Path:
    """Toluene's SDF with its ring centre moved to the dipeptide's alanine CA plus ``offset_angstrom``."""
    molecule = Chem.MolFromMolFile(TOLUENE_SDF, removeHs=False)
    conformer = molecule.GetConformer()
    coordinates = np.array(conformer.GetPositions())
    ca = next(line for line in Path(DIPEPTIDE_PDB).read_text().splitlines() if line[12:16].strip() == "CA")
    target = np.array([float(ca[30:38]), float(ca[38:46]), float(ca[46:54])])
    for index, xyz in enumerate(coordinates - coordinates[:6].mean(axis=0) + target + np.asarray(offset_angstrom)):
        conformer.SetAtomPosition(index, xyz.tolist())
    path = tmp_path / "posed.sdf"
    Chem.MolToMolFile(molecule, str(path))
    return path


def test_ligand_clashing_with_protein(tmp_path):
    """Toluene moved so that its ring centre sits on an alanine CA atom."""
    path = _toluene_posed_near_alanine_ca(tmp_path, [0.0, 0.0, 0.05])
    message = _build_fails("clashes with residue ALA", [str(path)], protein=DIPEPTIDE_PDB, solvent=False)
    assert "nm apart" in message and "coordinate frame" in message


def test_a_2d_drawing_is_refused(tmp_path, capfd):
    """Ethanol drawn in 2D (every z = 0, an SDF tagged 2D): flat sp3 carbons are no pose.
    Toluene's SDF, tagged 2D but with z coordinates, is read as 3D without RDKit's warning."""
    from rdkit.Chem import AllChem

    ethanol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.Compute2DCoords(ethanol)
    path = tmp_path / "ethanol-2d.sdf"
    Chem.MolToMolFile(ethanol, str(path))
    message = _build_fails("holds a 2D drawing", [str(path)], solvent=False)
    assert "SMILES" in message
    build_system([TOLUENE_SDF], solvent=False, progress=False)
    assert "tagged as 2D" not in capfd.readouterr().err


def test_ligand_far_from_the_protein_is_built_with_a_warning(tmp_path):
    """A ligand posed 3 nm above the protein: probably another coordinate frame, so say so."""
    far = _toluene_posed_near_alanine_ca(tmp_path, [0.0, 0.0, 30.0])
    with pytest.warns(UserWarning, match=r"ligand \w+ is \d+\.\d nm from the nearest protein atom"):
        built = build_system([str(far)], protein=DIPEPTIDE_PDB, solvent=False, progress=False)
    assert len(built.regions["ligand"]) == 15
    near = _toluene_posed_near_alanine_ca(tmp_path, [0.0, 0.0, 5.0])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*nearest protein atom")
        build_system([str(near)], protein=DIPEPTIDE_PDB, solvent=False, progress=False)


@pytest.mark.parametrize("smiles, element", [("OB(O)c1ccccc1", "B"), ("C[Se]C", "Se"), ("C[SiH3]", "Si")])
def test_element_the_force_field_does_not_cover(smiles, element):
    message = _build_fails(f"element\\(s\\) {element} that openff-2.2.1 does not cover", [smiles], solvent=False)
    assert smiles in message


def test_unknown_small_molecule_forcefield():
    message = _build_fails("unknown small-molecule force field 'openff-9.9.9'", [TOLUENE_SDF],
                           small_molecule_forcefield="openff-9.9.9")
    assert "openff-2.2.1" in message  # the message lists what is installed


def test_unknown_protein_forcefield_and_water_model():
    _build_fails("unknown protein force field 'amber/ff99nope.xml'", [TOLUENE_SDF],
                 protein_forcefield="amber/ff99nope.xml")
    _build_fails("unknown water model 'spc'.*tip3p, opc, tip4pew", [TOLUENE_SDF], water_model="spc")


def test_am1bcc_without_ambertools_or_unknown_charge_method():
    _build_fails("unknown charge method 'gasteiger'", [TOLUENE_SDF], charge_method="gasteiger")
    import shutil

    if shutil.which("sqm") is None:
        _build_fails("needs AmberTools", [TOLUENE_SDF], charge_method="am1bcc")


@pytest.mark.parametrize("options, match", [
    ({"padding": -0.5}, r"padding = -0.5 nm is negative"),
    ({"ionic_strength": -0.1}, r"ionic_strength = -0.1 M is negative"),
    ({"box_size": [3.0, -1.0, 3.0]}, r"box_size .* positive lengths"),
    ({"box_size": 0.5, "nonbonded_cutoff": 0.2}, r"box_size \[0.5, 0.5, 0.5\] nm is smaller than the solute"),
    ({"box_size": 1.2}, r"box_size \[1.2, 1.2, 1.2\] nm is shorter than twice the cutoff \(0.9 nm\)"),
    ({"constraints": "angles"}, r"unknown constraints 'angles'"),
    ({"hydrogen_mass": 12.0}, r"hydrogen_mass = 12.0 amu is outside"),
    ({"add_hydrogens_ph": 15}, r"pH = 15.0 is outside"),
    ({"nonbonded_cutoff": 0.0}, r"nonbonded_cutoff = 0.0 nm must be positive"),
])
def test_bad_box_and_option_values(options, match):
    _build_fails(match, [TOLUENE_SDF], **options)


def test_nothing_to_build():
    _build_fails("nothing to build", [])


def test_multi_molecule_sdf(tmp_path):
    path = tmp_path / "two.sdf"
    block = Path(TOLUENE_SDF).read_text()
    path.write_text(block + ("" if block.endswith("$$$$\n") else "$$$$\n") + block)
    _build_fails("holds 2 molecules; give one molecule per file", [str(path)], solvent=False)


def test_recipe_errors(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("ligands:\n  - source: {package: openff.toolkit, path: data/molecules/nope.sdf}\n")
    with pytest.raises(InputError, match="ligand file .*nope.sdf does not exist"):
        load_recipe(recipe)
    recipe.write_text("ligands: [{source: {smiles: C}}]\npaddding: 1.0\n")
    with pytest.raises(InputError, match="unknown key\\(s\\) paddding"):
        load_recipe(recipe)
    recipe.write_text("ligands: [{source: {smiles: C}}\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_recipe(recipe)
    with pytest.raises(InputError, match="does not exist"):
        build_from_recipe(tmp_path / "absent.yaml")


def test_recipe_paths_resolve_relative_to_the_recipe(tmp_path):
    (tmp_path / "ligands").mkdir()
    (tmp_path / "ligands" / "toluene.sdf").write_text(Path(TOLUENE_SDF).read_text())
    recipe = tmp_path / "local.yaml"
    recipe.write_text("ligands:\n  - ligands/toluene.sdf\n  - {source: 'CCO', resname: ETH}\npadding: 1.2\n")
    kwargs = load_recipe(recipe)
    assert kwargs["ligands"][0].source == str((tmp_path / "ligands" / "toluene.sdf").resolve())
    assert (kwargs["ligands"][1].source, kwargs["ligands"][1].resname) == ("CCO", "ETH")
    assert kwargs["padding"] == 1.2 and kwargs["cofactors"] == []
