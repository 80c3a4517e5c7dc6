"""The object every stage of mlmm hands on: a parametrized MM system with named regions.

A :class:`MolecularSystem` holds the topology, the positions (nm), the OpenMM ``System``
(pure MM, never a TorchForce), named atom regions such as ``ligand``, ``protein`` and
``solvent``, and each atom's formal charge (e), from which the total charge of any ML
region follows. It saves to a folder that reloads without re-parametrizing::

    folder/system.xml      the serialized MM System
    folder/topology.pdb    topology and positions (topology.cif when PDB columns cannot hold the
                           atom count, residue ids or chain ids)
    folder/metadata.json   regions, formal charges, molecules, force fields, build options
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u

from .atomic_io import atomic_directory
from .errors import InputError

METADATA_FILE = "metadata.json"
SYSTEM_FILE = "system.xml"
FORMAT_VERSION = 1


@dataclass
class MoleculeRecord:
    """One molecule (or chain) of the system: its role, identity and formal charge (e)."""

    name: str
    role: str  # "ligand", "cofactor", "protein", "solvent" or "ion"
    atom_indices: list[int]
    formal_charge: int
    smiles: str | None = None  # mapped SMILES for small molecules, so chemistry survives a reload


@dataclass
class MolecularSystem:
    """A parametrized MM system with its topology, positions (nm) and named regions."""

    topology: app.Topology
    positions: np.ndarray  # (N, 3) float64, nm
    system: openmm.System
    regions: dict[str, np.ndarray] = field(default_factory=dict)
    formal_charges: np.ndarray | None = None  # (N,) int, e
    molecules: list[MoleculeRecord] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        n = self.system.getNumParticles()
        if self.topology.getNumAtoms() != n or len(self.positions) != n:
            raise InputError(
                f"topology ({self.topology.getNumAtoms()} atoms), positions ({len(self.positions)}) and "
                f"System ({n} particles) disagree; they must describe the same atoms."
            )
        self.regions = {name: np.asarray(idx, dtype=np.int64) for name, idx in self.regions.items()}
        if self.formal_charges is None:
            self.formal_charges = np.zeros(n, dtype=np.int64)
        self.formal_charges = np.asarray(self.formal_charges, dtype=np.int64)

    # ------------------------------------------------------------------ properties
    @property
    def n_atoms(self) -> int:
        return self.system.getNumParticles()

    @property
    def is_periodic(self) -> bool:
        return self.system.usesPeriodicBoundaryConditions()

    @property
    def box_vectors(self) -> np.ndarray | None:
        """Periodic box vectors as a (3, 3) array in nm (rows a, b, c), or None in vacuum."""
        if not self.is_periodic:
            return None
        return np.array([v.value_in_unit(u.nanometer) for v in self.system.getDefaultPeriodicBoxVectors()])

    @property
    def atomic_numbers(self) -> np.ndarray:
        """Atomic number of each particle; 0 for virtual sites (e.g. the M site of 4-site water)."""
        return np.array([0 if atom.element is None else atom.element.atomic_number for atom in self.topology.atoms()],
                        dtype=np.int64)

    def total_charge(self, indices=None) -> int:
        """Sum of formal charges (e) over ``indices`` (all atoms when None)."""
        charges = self.formal_charges if indices is None else self.formal_charges[np.asarray(indices)]
        return int(charges.sum())

    def positions_quantity(self) -> u.Quantity:
        return u.Quantity(self.positions, u.nanometer)

    def with_positions(self, positions) -> "MolecularSystem":
        """A copy sharing everything but the positions (nm)."""
        return MolecularSystem(
            self.topology, np.array(positions, dtype=np.float64), self.system, dict(self.regions),
            self.formal_charges.copy(), list(self.molecules), dict(self.metadata),
        )

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Save to ``folder`` atomically: nothing appears unless every file was written."""
        folder = Path(folder)
        with atomic_directory(folder, overwrite=overwrite) as tmp:
            (tmp / SYSTEM_FILE).write_text(openmm.XmlSerializer.serialize(self.system))
            topology_file = "topology.pdb" if self._fits_pdb_format() else "topology.cif"
            writer = app.PDBxFile if topology_file.endswith(".cif") else app.PDBFile
            with open(tmp / topology_file, "w") as handle:
                writer.writeFile(self.topology, self.positions_quantity(), handle, keepIds=True)
            metadata = {
                "format_version": FORMAT_VERSION,
                "topology_file": topology_file,
                "regions": {name: idx.tolist() for name, idx in self.regions.items()},
                "formal_charges": self.formal_charges.tolist(),
                "molecules": [vars(m) for m in self.molecules],
                "positions_nm": self.positions.tolist(),  # full precision; the PDB rounds to 1e-4 nm
                "metadata": self.metadata,
            }
            (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=1))
        return folder

    def _fits_pdb_format(self) -> bool:
        """PDB columns hold at most 99,999 atoms, 4-character residue ids and 1-character chain ids."""
        return self.n_atoms <= 99_999 and all(
            len(residue.id) <= 4 and len(residue.chain.id) <= 1 for residue in self.topology.residues()
        )

    @classmethod
    def load(cls, folder: str | Path) -> "MolecularSystem":
        """Reload a folder written by :meth:`save` without re-parametrizing anything."""
        folder = Path(folder)
        meta_path = folder / METADATA_FILE
        if not meta_path.is_file():
            raise InputError(
                f"{folder} is not a saved mlmm system (no {METADATA_FILE}); build one with `mlmm build` "
                "or MolecularSystem.save()."
            )
        meta = json.loads(meta_path.read_text())
        system = openmm.XmlSerializer.deserialize((folder / SYSTEM_FILE).read_text())
        topology_path = folder / meta["topology_file"]
        reader = app.PDBxFile if topology_path.suffix == ".cif" else app.PDBFile
        structure = reader(str(topology_path))
        topology = structure.topology
        if system.usesPeriodicBoundaryConditions():
            # one Quantity holding three Vec3 (a list of three Quantities breaks PDBFile.writeHeader)
            box = [v.value_in_unit(u.nanometer) for v in system.getDefaultPeriodicBoxVectors()]
            topology.setPeriodicBoxVectors(u.Quantity(box, u.nanometer))
        return cls(
            topology=topology,
            positions=np.array(meta["positions_nm"]),
            system=system,
            regions={k: np.array(v, dtype=np.int64) for k, v in meta["regions"].items()},
            formal_charges=np.array(meta["formal_charges"], dtype=np.int64),
            molecules=[MoleculeRecord(**m) for m in meta["molecules"]],
            metadata=meta["metadata"],
        )
