"""Small molecules (ligands, cofactors): load, check and assign partial charges.

A ligand comes from an SDF/MOL file, a Tripos MOL2 file, a SMILES string (a conformer is
generated) or an ``openff.toolkit.Molecule``. It must carry every hydrogen, defined
stereochemistry and only elements the small-molecule force field covers. Partial charges
(e) come from NAGL's AM1-BCC graph model (offline) or from AM1-BCC itself (AmberTools).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .forcefields import NAGL_MODEL, covered_elements

FILE_SUFFIXES = (".sdf", ".mol", ".sd", ".mol2")


@dataclass
class Ligand:
    """A small molecule to place in the system.

    ``source``: a path (SDF, MOL, MOL2), a SMILES string or an ``openff.toolkit.Molecule``.
    ``resname``: its residue name in the topology (MDTraj ``resname LIG`` selects it).
    ``name``: a label for records and messages (defaults to the file stem or the SMILES).
    ``role``: ``"ligand"`` or ``"cofactor"``.
    """

    source: object
    resname: str = "LIG"
    name: str | None = None
    role: str = "ligand"

    def __post_init__(self):
        if self.role not in ("ligand", "cofactor"):
            raise InputError(f"ligand role {self.role!r} is not known; use 'ligand' or 'cofactor'.")
        if not (1 <= len(str(self.resname)) <= 3) or not str(self.resname).isalnum():
            raise InputError(
                f"residue name {self.resname!r} must be 1-3 letters or digits (PDB limit); use e.g. 'LIG'."
            )
        if self.name is None:
            self.name = _default_name(self.source)


def as_ligand(item, role: str = "ligand") -> Ligand:
    """Wrap a path, SMILES or Molecule as a :class:`Ligand` (a Ligand passes through)."""
    return item if isinstance(item, Ligand) else Ligand(item, resname="LIG" if role == "ligand" else "COF", role=role)


def _default_name(source) -> str:
    if isinstance(source, (str, os.PathLike)) and _looks_like_path(source):
        return Path(source).stem
    if hasattr(source, "to_smiles"):
        return source.name or source.to_smiles(explicit_hydrogens=False)
    return str(source)


def _looks_like_path(source) -> bool:
    text = os.fspath(source)
    return isinstance(source, os.PathLike) or text.lower().endswith(FILE_SUFFIXES) or os.path.exists(text)


def load_ligand(ligand: Ligand, small_molecule_forcefield: str):
    """Read ``ligand.source`` into an ``openff.toolkit.Molecule`` with one conformer, checked.

    Returns ``(molecule, posed)``: ``posed`` is False when the conformer was generated here
    (SMILES, or a Molecule without conformers), so its position means nothing yet.
    Raises :class:`InputError` for a missing or unreadable file, a SMILES that does not parse,
    missing hydrogens, undefined stereochemistry or an element the force field does not cover.
    """
    from openff.toolkit import Molecule

    source, posed = ligand.source, True
    if isinstance(source, Molecule):
        molecule = Molecule(source)
    elif isinstance(source, (str, os.PathLike)) and _looks_like_path(source):
        molecule = _read_file(Path(source))
    elif isinstance(source, str):
        molecule = _from_smiles(source)
    else:
        raise InputError(f"ligand {source!r} is not a file path, SMILES string or openff Molecule.")
    molecule.name = ligand.name
    _check_hydrogens(molecule, ligand.name)
    _check_elements(molecule, ligand.name, small_molecule_forcefield)
    if molecule.n_conformers == 0:
        molecule.generate_conformers(n_conformers=1)
        posed = False
    return molecule, posed


def _read_file(path: Path):
    from openff.toolkit import Molecule
    from openff.toolkit.utils.exceptions import OpenFFToolkitException, UndefinedStereochemistryError

    if not path.is_file():
        raise InputError(f"ligand file {path} does not exist; check the path (or give a SMILES string).")
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise InputError(
            f"ligand file {path} has format {path.suffix or '(none)'}, which is not read; give an SDF, MOL or MOL2 "
            "file with all hydrogens, or a SMILES string."
        )
    try:
        if path.suffix.lower() == ".mol2":
            molecules = [_read_mol2(path)]
        else:
            with _rdkit_warnings_silenced():
                loaded = Molecule.from_file(str(path), file_format="SDF", allow_undefined_stereo=False)
            molecules = loaded if isinstance(loaded, list) else [loaded]
    except UndefinedStereochemistryError as exc:
        raise InputError(_stereo_message(str(path), exc)) from None
    except (OpenFFToolkitException, ValueError, RuntimeError) as exc:
        raise InputError(
            f"cannot read a molecule from {path} ({exc}); give a valid SDF/MOL/MOL2 file with all hydrogens."
        ) from None
    if len(molecules) != 1:
        raise InputError(
            f"{path} holds {len(molecules)} molecules; give one molecule per file (repeat --ligand for several)."
        )
    molecule = molecules[0]
    in_file = _atoms_in_sdf(path) if path.suffix.lower() != ".mol2" else molecule.n_atoms
    if molecule.n_atoms > in_file:
        missing = molecule.n_atoms - in_file
        what = "has no hydrogens" if missing == sum(a.atomic_number == 1 for a in molecule.atoms) else "lacks hydrogens"
        raise InputError(
            f"ligand file {path} {what} ({in_file} atoms in the file, {molecule.n_atoms} with all hydrogens); "
            "protonate it in the state you intend, with 3D hydrogen positions (e.g. `obabel -h` or RDKit "
            "Chem.AddHs(mol, addCoords=True)), or give a SMILES with explicit charges."
        )
    _check_three_dimensional(molecule, path)
    return molecule


def _check_three_dimensional(molecule, path: Path) -> None:
    """Refuse a 2D drawing: every z exactly 0 in a molecule with a tetrahedral (four-bonded) atom."""
    if molecule.n_conformers == 0:
        return
    z = molecule.conformers[0].m_as("nanometer")[:, 2]
    if np.all(z == 0.0) and any(len(atom.bonds) == 4 for atom in molecule.atoms):
        raise InputError(
            f"ligand file {path} holds a 2D drawing (every z coordinate is 0); give 3D coordinates (posed in the "
            "protein's frame for a complex), or a SMILES string to have a conformer generated."
        )


@contextlib.contextmanager
def _rdkit_warnings_silenced():
    """RDKit's warnings off while a file is read (it warns, for example, that an SDF whose header
    says 2D holds z coordinates, and reads it as 3D); its errors still show."""
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.warning")
    try:
        yield
    finally:
        RDLogger.EnableLog("rdApp.warning")


def _atoms_in_sdf(path: Path) -> int:
    """Number of atoms the first record of an SDF/MOL file lists (the toolkit adds missing hydrogens)."""
    from rdkit import Chem

    with _rdkit_warnings_silenced():
        record = next(iter(Chem.SDMolSupplier(str(path), sanitize=False, removeHs=False, strictParsing=False)))
    return record.GetNumAtoms()


def _read_mol2(path: Path):
    """Tripos MOL2 through RDKit (OpenFF reads MOL2 only with OpenEye)."""
    from openff.toolkit import Molecule
    from rdkit import Chem

    rdmol = Chem.MolFromMol2File(str(path), removeHs=False)
    if rdmol is None:
        raise ValueError("RDKit could not parse it as Tripos MOL2")
    return Molecule.from_rdkit(rdmol, allow_undefined_stereo=False, hydrogens_are_explicit=True)


def _from_smiles(smiles: str):
    from openff.toolkit import Molecule
    from openff.toolkit.utils.exceptions import OpenFFToolkitException, UndefinedStereochemistryError

    try:
        molecule = Molecule.from_smiles(smiles, allow_undefined_stereo=False)
    except UndefinedStereochemistryError as exc:
        raise InputError(_stereo_message(f"SMILES {smiles!r}", exc)) from None
    except (OpenFFToolkitException, ValueError) as exc:
        raise InputError(
            f"ligand {smiles!r} is neither an existing file nor a valid SMILES ({exc}); check the path or the SMILES."
        ) from None
    return molecule


def _stereo_message(what: str, exc) -> str:
    detail = " ".join(str(exc).split())
    return (
        f"{what} has undefined stereochemistry ({detail}); give a structure with defined "
        "stereocentres and double bonds (e.g. an SDF with 3D coordinates or a SMILES with @/@@ and / \\)."
    )


def _check_hydrogens(molecule, name: str) -> None:
    """Refuse molecules with atoms below their normal valence: their hydrogens are missing.

    An atom of element Z and formal charge q is compared with the valences RDKit allows for
    the isoelectronic element Z - q (N+ like C: 4; O- like F: 1; C- like N: 3).
    """
    from rdkit import Chem

    table = Chem.GetPeriodicTable()
    unfilled = []
    for index, atom in enumerate(molecule.atoms):
        charge = int(atom.formal_charge.m_as("elementary_charge"))
        if atom.atomic_number - charge < 1:
            continue
        valences = list(table.GetValenceList(atom.atomic_number - charge))
        total = sum(bond.bond_order for bond in atom.bonds)
        if -1 not in valences and total not in valences and total < max(valences):
            unfilled.append(f"{atom.symbol}{index + 1}")
    if unfilled:
        hint = "has no hydrogens" if not any(a.atomic_number == 1 for a in molecule.atoms) else "lacks hydrogens"
        raise InputError(
            f"ligand {name!r} {hint}: atoms {', '.join(unfilled[:8])} have unfilled valences; add explicit hydrogens "
            "with 3D positions (e.g. `obabel -h` or RDKit Chem.AddHs(mol, addCoords=True)) or give a SMILES."
        )


def _check_elements(molecule, name: str, small_molecule_forcefield: str) -> None:
    covered = covered_elements(small_molecule_forcefield)
    missing = sorted({atom.symbol for atom in molecule.atoms if atom.atomic_number not in covered})
    if missing:
        raise InputError(
            f"ligand {name!r} contains element(s) {', '.join(missing)} that {small_molecule_forcefield} does not "
            "cover; remove the ligand or parametrize it with a force field that covers them."
        )


def assign_charges(molecule, method: str) -> None:
    """Assign partial charges (e) in place with ``nagl`` (default) or ``am1bcc``."""
    if method == "nagl":
        from openff.toolkit.utils.nagl_wrapper import NAGLToolkitWrapper

        try:
            molecule.assign_partial_charges(NAGL_MODEL, toolkit_registry=NAGLToolkitWrapper())
        except ValueError as exc:
            raise InputError(
                f"NAGL cannot charge ligand {molecule.name!r} ({exc}); use charge_method='am1bcc' with AmberTools."
            ) from None
    else:
        molecule.assign_partial_charges("am1bcc")
    charges = molecule.partial_charges.m_as("elementary_charge")
    if not np.all(np.isfinite(charges)):
        raise InputError(f"partial charges of ligand {molecule.name!r} are not finite; check the structure.")


def formal_charges(molecule) -> np.ndarray:
    """Per-atom formal charges (e) of an OpenFF molecule."""
    return np.array([atom.formal_charge.m_as("elementary_charge") for atom in molecule.atoms], dtype=np.int64)
