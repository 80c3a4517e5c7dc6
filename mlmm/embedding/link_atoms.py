"""Link atoms: hydrogen caps for an ML region whose boundary cuts covalent bonds.

For each cut bond Q1-M1 (Q1 in the region, M1 outside) the ML model sees one link hydrogen on
the bond axis::

    r_L = r_Q1 + g (r_M1 - r_Q1),    g = d(Q1-H) / d_eq(Q1-M1)

``d(Q1-H)`` is a standard X-H bond length for Q1's element (:data:`STANDARD_XH_LENGTH_NM`) and
``d_eq(Q1-M1)`` the MM equilibrium length of the cut bond (its ``HarmonicBondForce`` term, or its
constraint). ``g`` is fixed, so ``r_L`` is a linear function of ``r_Q1`` and ``r_M1`` and the link
atom has no degrees of freedom of its own: the force ``F_L`` the model puts on it goes to
``Q1`` as ``(1 - g) F_L`` and to ``M1`` as ``g F_L`` (chain rule). Autograd applies that rule
because the link positions are computed inside the TorchScript module from the positions OpenMM
passes; under periodic boundaries the region and its M1 atoms are made whole about one anchor
atom first and the links are placed from the whole coordinates.

The model input is the region's atoms, in region order, followed by the link hydrogens
(atomic number 1). The region's total charge is the sum of the region's formal charges: the caps
are neutral hydrogens.

MM side (:mod:`mlmm.embedding.mm_region`, unchanged): the MM energy subtracted is that of the
region alone, i.e. only terms whose atoms all lie in the region; every bond, angle, torsion and
nonbonded exception that involves an outside atom, the cut bond Q1-M1 included, stays MM.

Electrostatic embedding (the coupling term only; the complete MM force field in the MM groups is
not modified): M1's MM charge is removed from the coupling and redistributed in equal parts onto
its M2 atoms, the atoms bonded to M1 outside the region (and not themselves M1 atoms), so the
environment's total charge is conserved (:func:`redistributed_charges`). M1 itself takes no part in
the coupling, which removes the huge 1-2 Coulomb terms between Q1 and M1. This is the
redistributed-charge idea of Lin and Truhlar (J. Phys. Chem. A 109, 3991, 2005) with the
redistributed charges placed on the M2 atoms themselves; their RC scheme places them at the
M1-M2 bond midpoints. The ML charges of the link atoms do not interact with the environment.

Accepted cuts: a single bond between two heavy atoms, outside any ring, with Q1 one of C, N, O, S.
A bond counts as single when the topology records it as such, or, where the topology has no bond
orders (proteins read from PDB files), when one of its atoms is saturated (C or N with four bonded
atoms, O or S with two). Cut C-C bonds between sp3 carbons, such as CA-CB of a side chain.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import torch
from torch import Tensor

from ..errors import InputError
from ..potentials import for_energy_only, returns_forces
from ..regions import bonds_cut_by
from ..torch_geometry import make_whole

#: standard X-H bond lengths (nm) by atomic number of the capped atom Q1
STANDARD_XH_LENGTH_NM = {6: 0.109, 7: 0.101, 8: 0.096, 16: 0.134}
#: atomic number of a link atom (a hydrogen cap)
LINK_ATOMIC_NUMBER = 1
# Bonded-neighbour count at which every bond of an atom of this element is a single bond.
_SATURATED_NEIGHBOURS = {6: 4, 7: 4, 8: 2, 16: 2}


@dataclass(frozen=True)
class LinkAtoms:
    """The link hydrogens of a region: one per cut bond, in the order the model sees them.

    ``inner`` are the Q1 atoms (in the region), ``outer`` the M1 atoms (outside), both as
    0-based indices in the full system, and ``ratios`` the fixed ratios ``g`` (dimensionless).
    """

    inner: np.ndarray
    outer: np.ndarray
    ratios: np.ndarray

    def __len__(self) -> int:
        return len(self.inner)

    @property
    def atomic_numbers(self) -> np.ndarray:
        return np.full(len(self), LINK_ATOMIC_NUMBER, dtype=np.int64)

    def to_dict(self) -> dict:
        return {"inner": self.inner.tolist(), "outer": self.outer.tolist(), "ratios": self.ratios.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "LinkAtoms":
        return cls(np.array(data["inner"], dtype=np.int64), np.array(data["outer"], dtype=np.int64),
                   np.array(data["ratios"], dtype=np.float64))


def link_atoms_for(molecular_system, region: np.ndarray) -> LinkAtoms:
    """Link atoms capping every covalent bond that the region (sorted atom indices) cuts.

    Raises :class:`InputError` for a cut that is not a single bond between heavy atoms outside a
    ring, with Q1 one of C, N, O, S, or whose MM equilibrium length the System does not hold.
    """
    cut_bonds = bonds_cut_by(molecular_system, region)
    atoms = list(molecular_system.topology.atoms())
    numbers = molecular_system.atomic_numbers
    neighbours = bonded_neighbours(molecular_system.topology)
    bonds = {frozenset((bond[0].index, bond[1].index)): bond for bond in molecular_system.topology.bonds()}
    lengths = _equilibrium_lengths(molecular_system.system, cut_bonds)
    ratios = []
    for q1, m1 in cut_bonds:
        name = f"{_atom_label(atoms[q1])}-{_atom_label(atoms[m1])}"
        if numbers[q1] == 1 or numbers[m1] == 1:
            raise InputError(
                f"the ML region cuts the bond {name} to a hydrogen; link atoms replace bonds between heavy atoms only. "
                "Put the hydrogen on the same side of the boundary as the atom it is bonded to."
            )
        if numbers[q1] not in STANDARD_XH_LENGTH_NM:
            raise InputError(
                f"the ML region cuts the bond {name} at a {atoms[q1].element.symbol} atom; link atoms can cap C, N, O "
                "and S only. Move the boundary to a C-C single bond."
            )
        if _in_ring(neighbours, q1, m1):
            raise InputError(
                f"the ML region cuts the ring bond {name}; put the whole ring on one side of the boundary."
            )
        if not _is_single(bonds[frozenset((q1, m1))], neighbours, numbers):
            raise InputError(
                f"the ML region cuts the bond {name}, which is not a single bond between saturated atoms; cut a single "
                "bond, preferably between sp3 carbons such as CA-CB of a side chain."
            )
        if (q1, m1) not in lengths:
            raise InputError(
                f"the MM System holds no bond or constraint for the cut bond {name}, so the link atom has no reference "
                "length; build the system with standard OpenMM bond forces (mlmm build does)."
            )
        ratios.append(STANDARD_XH_LENGTH_NM[int(numbers[q1])] / lengths[(q1, m1)])
    return LinkAtoms(np.array([q for q, _ in cut_bonds], dtype=np.int64),
                     np.array([m for _, m in cut_bonds], dtype=np.int64), np.array(ratios, dtype=np.float64))


def redistributed_charges(topology: app.Topology, charges: np.ndarray, region: np.ndarray,
                          link_atoms: LinkAtoms) -> np.ndarray:
    """Environment charges (e) for the electrostatic coupling of a region with link atoms, all N atoms.

    Region atoms and the M1 atoms get zero; each M1's MM charge is added in equal parts to its
    M2 atoms (bonded to M1, outside the region, not M1 atoms themselves); every other atom keeps
    its MM charge. The sum equals the MM charge of everything outside the region. Raises
    :class:`InputError` for an M1 atom without M2 atoms, whose charge could not be kept.
    """
    coupled = np.asarray(charges, dtype=np.float64).copy()
    coupled[np.asarray(region)] = 0.0
    boundary = np.unique(link_atoms.outer)
    outside = np.ones(len(coupled), dtype=bool)
    outside[np.asarray(region)] = False
    outside[boundary] = False
    neighbours = bonded_neighbours(topology)
    atoms = list(topology.atoms())
    for m1 in boundary:
        receivers = [m2 for m2 in neighbours[m1] if outside[m2]]
        if not receivers:
            raise InputError(
                f"boundary atom {_atom_label(atoms[m1])} of the ML region has no bonded atom outside the region to take "
                "over its charge in the electrostatic coupling; include it in the region or use mechanical embedding."
            )
        coupled[receivers] += charges[m1] / len(receivers)
        coupled[m1] = 0.0
    return coupled


def bonded_neighbours(topology: app.Topology) -> list[list[int]]:
    """For each atom, the indices of the atoms bonded to it in ``topology``."""
    neighbours: list[list[int]] = [[] for _ in range(topology.getNumAtoms())]
    for bond in topology.bonds():
        i, j = bond[0].index, bond[1].index
        neighbours[i].append(j)
        neighbours[j].append(i)
    return neighbours


class CappedRegion(torch.nn.Module):
    """The ML model's input from all positions: the region made whole, then its link hydrogens.

    ``forward(positions (N, 3) nm, box (3, 3) nm or None) -> (n + L, 3) nm``. The region and its M1
    atoms are gathered (``atoms``), made whole about the region atom ``anchor`` under periodic
    boundaries, and each link placed at ``r_Q1 + g (r_M1 - r_Q1)``. Without link atoms this is
    the region made whole. Differentiable; no host synchronisation.
    """

    def __init__(self, region, link_atoms: Optional[LinkAtoms], periodic: bool, anchor: int = 0):
        super().__init__()
        region = np.asarray(region, dtype=np.int64)
        inner = np.zeros(0, dtype=np.int64) if link_atoms is None else link_atoms.inner
        outer = np.zeros(0, dtype=np.int64) if link_atoms is None else link_atoms.outer
        ratios = np.zeros(0) if link_atoms is None else link_atoms.ratios
        boundary, outer_slot = np.unique(outer, return_inverse=True)
        slot_in_region = {int(atom): slot for slot, atom in enumerate(region)}
        self.register_buffer("atoms", torch.as_tensor(np.concatenate([region, boundary]), dtype=torch.long))
        self.register_buffer("inner", torch.as_tensor([slot_in_region[int(q)] for q in inner], dtype=torch.long))
        self.register_buffer("outer", torch.as_tensor(len(region) + outer_slot.reshape(-1), dtype=torch.long))
        self.register_buffer("ratios", torch.as_tensor(ratios, dtype=torch.float64).reshape(-1, 1))
        self.n_region = len(region)
        self.periodic = bool(periodic)
        self.anchor = int(anchor)

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        return self.from_gathered(positions.index_select(0, self.atoms), box)

    def from_gathered(self, gathered: Tensor, box: Optional[Tensor] = None) -> Tensor:
        """The model input from ``positions[atoms]`` (the region followed by its M1 atoms)."""
        if self.periodic:
            assert box is not None, "CappedRegion was built for periodic boundaries but got no box"
            gathered = make_whole(gathered, box, self.anchor)
        inner = gathered.index_select(0, self.inner)
        outer = gathered.index_select(0, self.outer)
        links = inner + self.ratios.to(gathered.dtype) * (outer - inner)
        return torch.cat([gathered.narrow(0, 0, self.n_region), links])


class LinkedRegionForce(torch.nn.Module):
    """Energy and forces of a region model on a region capped with link hydrogens.

    The counterpart of :class:`mlmm.ml_force.MLRegionForce` for regions that cut bonds:
    ``forward(positions (N, 3) nm, box (3, 3) nm, optional) -> (energy kJ/mol, forces (N, 3) kJ/mol/nm)``.
    The region model receives the region plus link atoms (:class:`CappedRegion`); the forces on
    the link atoms reach Q1 and M1 through autograd. Atoms other than the region and its M1 atoms
    get zero force.
    """

    def __init__(self, region_model, capped: CappedRegion, n_atoms: int):
        super().__init__()
        self.model = for_energy_only(region_model)  # only the energy is differentiated
        self.model_returns_forces = returns_forces(self.model)
        self.capped = capped
        self.n_atoms = int(n_atoms)

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        # grad off except around autograd passes, as in mlmm.ml_force.MLRegionForce (which says why)
        grad_was_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(False)
        assert positions.shape[0] == self.n_atoms, "LinkedRegionForce got positions of a different number of atoms"
        gathered = positions.index_select(0, self.capped.atoms)
        if not self.model_returns_forces:
            torch.set_grad_enabled(True)
            gathered.requires_grad_(True)
        output = self.model(self.capped.from_gathered(gathered, box))
        if self.model_returns_forces:
            # the model's forces F on the capped coordinates x(gathered), held fixed: autograd of
            # -F . x gives the chain rule through the caps' placement, without the model
            torch.set_grad_enabled(True)
            gathered.requires_grad_(True)
            target = -(self.capped.from_gathered(gathered, box) * output["forces"].to(gathered.dtype)).sum()
        else:
            target = output["energy"]
        gradient = torch.autograd.grad([target], [gathered])[0]
        assert gradient is not None
        torch.set_grad_enabled(False)
        forces = torch.zeros_like(positions).index_copy(0, self.capped.atoms, -gradient.to(positions.dtype))
        energy = output["energy"].to(positions.dtype).clone()
        torch.set_grad_enabled(grad_was_enabled)
        return energy, forces


def create_linked_module(region_model, region, link_atoms: LinkAtoms, n_atoms: int, periodic: bool,
                         anchor: int = 0) -> torch.jit.ScriptModule:
    """Script a :class:`LinkedRegionForce` for ``region_model`` on ``region`` capped by ``link_atoms``."""
    return torch.jit.script(LinkedRegionForce(region_model, CappedRegion(region, link_atoms, periodic, anchor), n_atoms))


def ml_coordinates(region, link_atoms: Optional[LinkAtoms], positions, box=None, anchor: int = 0) -> Tensor:
    """The model input (n + L, 3) nm, float64, at ``positions`` (N, 3) nm with ``box`` (3, 3) nm or None."""
    capped = CappedRegion(region, link_atoms, box is not None, anchor)
    box_tensor = None if box is None else torch.as_tensor(np.asarray(box), dtype=torch.float64)
    with torch.no_grad():
        return capped(torch.as_tensor(np.asarray(positions), dtype=torch.float64), box_tensor)


def _equilibrium_lengths(system: openmm.System, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], float]:
    """MM reference length (nm) of each (i, j) pair: its HarmonicBondForce term, else its constraint."""
    wanted = {frozenset(pair): pair for pair in pairs}
    lengths: dict[tuple[int, int], float] = {}
    for index in range(system.getNumConstraints()):
        i, j, distance = system.getConstraintParameters(index)
        if (pair := wanted.get(frozenset((i, j)))) is not None:
            lengths[pair] = distance.value_in_unit(u.nanometer)
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for index in range(force.getNumBonds()):
                i, j, length, _ = force.getBondParameters(index)
                if (pair := wanted.get(frozenset((i, j)))) is not None:
                    lengths[pair] = length.value_in_unit(u.nanometer)
    return lengths


def _in_ring(neighbours: list[list[int]], a: int, b: int) -> bool:
    """Whether ``b`` stays reachable from ``a`` without the bond a-b (the bond closes a ring)."""
    seen = {a}
    queue = deque(n for n in neighbours[a] if n != b)
    seen.update(queue)
    while queue:
        atom = queue.popleft()
        if atom == b:
            return True
        for n in neighbours[atom]:
            if n not in seen:
                seen.add(n)
                queue.append(n)
    return False


def _is_single(bond, neighbours: list[list[int]], numbers: np.ndarray) -> bool:
    """A single bond by its recorded order or type, or, unrecorded, by a saturated end atom."""
    if bond.order is not None or bond.type is not None:
        return bond.order in (None, 1) and bond.type in (None, app.Single)
    return any(len(neighbours[a]) == _SATURATED_NEIGHBOURS.get(int(numbers[a])) for a in (bond[0].index, bond[1].index))


def _atom_label(atom) -> str:
    return f"{atom.residue.name}{atom.residue.id}:{atom.name}"
