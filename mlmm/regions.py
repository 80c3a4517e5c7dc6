"""Atom regions: one way to name a set of atoms, used everywhere in mlmm.

A region specification may be
- a region name stored in the system (``"ligand"``, ``"protein"``, ``"solvent"``, ...);
- ``"resname XYZ"`` or any other MDTraj selection string (``"resid 10 to 20 and sidechain"``);
- a sequence of 0-based atom indices.

:func:`resolve_region` turns any of these into a sorted, unique index array, or raises an
:class:`InputError` that says what matched nothing and what would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import InputError


def resolve_region(molecular_system, spec: str | Sequence[int] | np.ndarray) -> np.ndarray:
    """Return the sorted atom indices (int64) that ``spec`` names in ``molecular_system``."""
    n_atoms = molecular_system.n_atoms
    if isinstance(spec, str):
        name = spec.strip()
        if name in molecular_system.regions:
            indices = np.asarray(molecular_system.regions[name], dtype=np.int64)
        else:
            indices = _select_mdtraj(molecular_system, name)
    else:
        try:
            indices = np.asarray(list(spec), dtype=np.int64)
        except (TypeError, ValueError):
            raise InputError(f"region {spec!r} is neither a selection string nor a list of atom indices.") from None
        bad = indices[(indices < 0) | (indices >= n_atoms)]
        if bad.size:
            raise InputError(f"region indices {bad[:5].tolist()} are outside 0..{n_atoms - 1}; use 0-based atom indices.")
    indices = np.unique(indices)
    if indices.size == 0:
        known = ", ".join(sorted(molecular_system.regions)) or "none"
        raise InputError(
            f"region {spec!r} matches no atoms; use a region name ({known}), 'resname XYZ' or an MDTraj selection."
        )
    return indices


def _select_mdtraj(molecular_system, selection: str) -> np.ndarray:
    import mdtraj

    topology = mdtraj.Topology.from_openmm(molecular_system.topology)
    try:
        return np.asarray(topology.select(selection), dtype=np.int64)
    except Exception as exc:  # MDTraj raises several types for a bad grammar
        known = ", ".join(sorted(molecular_system.regions)) or "none"
        raise InputError(
            f"region {selection!r} is not a region name ({known}) nor a valid MDTraj selection: {exc}"
        ) from None


def bonds_cut_by(molecular_system, indices: np.ndarray) -> list[tuple[int, int]]:
    """Covalent bonds (i in region, j outside) that a region boundary cuts."""
    inside = np.zeros(molecular_system.n_atoms, dtype=bool)
    inside[indices] = True
    cut = []
    for bond in molecular_system.topology.bonds():
        i, j = bond[0].index, bond[1].index
        if inside[i] != inside[j]:
            cut.append((i, j) if inside[i] else (j, i))
    return cut
