"""Proteins: read a protonated PDB (or protonate one with PDBFixer) and get formal charges.

The protein file may also hold crystal waters and monatomic ions. Every residue must be one
the OpenFF toolkit recognizes (standard amino acids in any protonation state, water, ions),
so each atom's formal charge (e) comes from chemistry, not from guessed names.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm.app as app
import openmm.unit as u

from ..errors import InputError

CAPPING_GROUPS = ("ACE", "NME")
WATER_RESIDUE_NAMES = ("HOH", "WAT")


@dataclass
class ProteinStructure:
    """A protein ready to assemble: topology, positions (nm) and per-atom formal charges (e)."""

    topology: app.Topology
    positions: np.ndarray
    formal_charges: np.ndarray
    source: str


def load_protein(path, add_hydrogens_ph: float | None = None) -> ProteinStructure:
    """Read ``path`` (PDB or PDBx/mmCIF). With ``add_hydrogens_ph``, PDBFixer first adds missing
    heavy atoms and the hydrogens of the protonation states at that pH; heterogens other than
    water and ACE/NME caps are removed (missing loops are not modelled). Without it the file
    must already carry its hydrogens."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"protein file {path} does not exist; check the path.")
    if path.suffix.lower() not in (".pdb", ".cif", ".pdbx"):
        raise InputError(f"protein file {path} is not a .pdb or .cif file; convert it to PDB.")
    if add_hydrogens_ph is not None:
        topology, positions = _protonate(path, float(add_hydrogens_ph))
    else:
        reader = app.PDBxFile if path.suffix.lower() in (".cif", ".pdbx") else app.PDBFile
        try:
            structure = reader(str(path))
        except Exception as exc:  # OpenMM's readers raise several types on a malformed file
            raise InputError(f"cannot read protein file {path} ({exc}); give a valid PDB file.") from None
        topology, positions = structure.topology, structure.positions
        _check_hydrogens(topology, path)
    positions = np.array(positions.value_in_unit(u.nanometer), dtype=np.float64)
    charges = _formal_charges(topology, positions, path)
    return ProteinStructure(topology, positions, charges, str(path))


def _check_hydrogens(topology: app.Topology, path: Path) -> None:
    n_hydrogens = sum(1 for atom in topology.atoms() if atom.element is not None and atom.element.symbol == "H")
    if n_hydrogens == 0:
        raise InputError(
            f"protein {path} has no hydrogens; protonate it first or pass add_hydrogens_ph=7.4 "
            "(--add-hydrogens 7.4) to add them with PDBFixer."
        )


def _protonate(path: Path, ph: float):
    if not 0.0 <= ph <= 14.0:
        raise InputError(f"add_hydrogens pH = {ph} is outside 0..14; give a pH such as 7.4.")
    from pdbfixer import PDBFixer

    try:
        fixer = PDBFixer(filename=str(path))
    except Exception as exc:  # PDBFixer wraps OpenMM's readers
        raise InputError(f"cannot read protein file {path} ({exc}); give a valid PDB file.") from None
    fixer.findMissingResidues()
    fixer.missingResidues = {}  # do not model missing loops; only complete existing residues
    fixer.findNonstandardResidues()
    fixer.replaceNonstandardResidues()
    _remove_heterogens(fixer)
    fixer.findMissingAtoms()
    fixer.addMissingAtoms()
    fixer.addMissingHydrogens(ph)
    return fixer.topology, fixer.positions


def _remove_heterogens(fixer) -> None:
    """Remove ligands, buffer molecules and other heterogens; keep polymer residues, the
    ACE/NME capping groups (which ``PDBFixer.removeHeterogens`` would also remove) and water."""
    from pdbfixer.pdbfixer import dnaResidues, proteinResidues, rnaResidues

    keep = {*proteinResidues, *dnaResidues, *rnaResidues, *CAPPING_GROUPS, *WATER_RESIDUE_NAMES}
    heterogens = [residue for residue in fixer.topology.residues() if residue.name not in keep]
    modeller = app.Modeller(fixer.topology, fixer.positions)
    modeller.delete(heterogens)
    fixer.topology, fixer.positions = modeller.topology, modeller.positions


def _formal_charges(topology: app.Topology, positions_nm: np.ndarray, path: Path) -> np.ndarray:
    """Per-atom formal charges from the OpenFF toolkit's residue-chemistry perception."""
    from openff.toolkit import Topology
    from openff.toolkit.utils.exceptions import OpenFFToolkitException

    text = io.StringIO()
    app.PDBFile.writeFile(topology, positions_nm * u.nanometer, text, keepIds=True)
    text.seek(0)
    try:
        offtop = Topology.from_pdb(text)
    except OpenFFToolkitException as exc:
        message = str(exc).split("\n\n")[0]
        raise InputError(
            f"protein {path}: residues could not be matched to known chemistry ({message}). Each residue must be "
            "a standard amino acid with all its hydrogens, water or a monatomic ion: protonate the protein "
            "(--add-hydrogens 7.4), and give ligands and cofactors separately (--ligand)."
        ) from None
    by_key = {}
    for atom in offtop.atoms:
        meta = atom.metadata
        key = (meta["chain_id"], meta["residue_number"].strip(), meta["insertion_code"].strip(), atom.name)
        by_key[key] = atom.formal_charge.m_as("elementary_charge")
    charges = np.zeros(topology.getNumAtoms(), dtype=np.int64)
    for atom in topology.atoms():
        residue = atom.residue
        key = (residue.chain.id, residue.id.strip(), residue.insertionCode.strip(), atom.name)
        charges[atom.index] = by_key[key]
    return charges
