"""Building solvated protein-ligand systems with OpenFF, as :class:`mlmm.MolecularSystem`.

``build_system`` takes ligands (SDF, MOL2, SMILES or OpenFF molecules), an optional
protein (PDB) and the force-field, box, ion and constraint options; ``build_from_recipe``
does the same from a declarative YAML recipe (see ``systems/``).
"""

from __future__ import annotations

from .assemble import build_system
from .ligands import Ligand
from .recipes import load_recipe, recipe_info


def build_from_recipe(path, **overrides):
    """Build the system a YAML recipe describes; keyword ``overrides`` replace recipe values.

    The recipe's name, description and path are stored in ``metadata["recipe"]``.
    """
    kwargs = {**load_recipe(path), **overrides}
    molecular_system = build_system(**kwargs)
    molecular_system.metadata["recipe"] = recipe_info(path)
    return molecular_system


__all__ = ["Ligand", "build_from_recipe", "build_system", "load_recipe", "recipe_info"]
