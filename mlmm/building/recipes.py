"""Declarative system recipes (YAML) resolved against files and installed packages.

A recipe names the molecules and the build options of :func:`~mlmm.building.build_system`::

    name: t4l-toluene
    description: T4 lysozyme L99A with toluene in its buried cavity
    protein: {package: openff.toolkit, path: data/proteins/T4-protein.pdb}
    ligands:
      - source: {package: openff.toolkit, path: data/molecules/toluene.sdf}
        resname: TOL
    padding: 1.0          # nm
    ionic_strength: 0.15  # mol/L

A source is ``{smiles: ...}``, ``{path: ...}`` (relative to the recipe file) or
``{package: ..., path: ...}`` (inside an installed Python package); a bare string is a path
relative to the recipe when it names a file there, else a SMILES string.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from ..errors import InputError
from .ligands import FILE_SUFFIXES, Ligand

#: build_system keywords a recipe may set directly
OPTION_KEYS = (
    "solvent", "padding", "box_size", "ionic_strength", "neutralize", "small_molecule_forcefield",
    "protein_forcefield", "water_model", "charge_method", "constraints", "hydrogen_mass", "add_hydrogens_ph",
    "nonbonded_cutoff",
)
LIGAND_KEYS = ("source", "resname", "name")


def load_recipe(path) -> dict:
    """Read a recipe and return the keyword arguments of :func:`build_system` it describes.

    Paths are resolved (relative to the recipe, or inside the named package) and checked to
    exist; ``name`` and ``description`` are dropped (see :func:`recipe_info`).
    """
    path = Path(path)
    raw = _read_yaml(path)
    unknown = sorted(set(raw) - {"name", "description", "ligands", "cofactors", "protein", *OPTION_KEYS})
    if unknown:
        raise InputError(
            f"recipe {path}: unknown key(s) {', '.join(unknown)}; allowed are name, description, ligands, "
            f"cofactors, protein, {', '.join(OPTION_KEYS)}."
        )
    kwargs = {key: raw[key] for key in OPTION_KEYS if key in raw}
    for role, key in (("ligand", "ligands"), ("cofactor", "cofactors")):
        entries = raw.get(key) or []
        if not isinstance(entries, list):
            raise InputError(f"recipe {path}: '{key}' must be a list of entries (each '- source: ...').")
        kwargs[key] = [_ligand(entry, role, path) for entry in entries]
    if raw.get("protein") is not None:
        kwargs["protein"] = _resolve_file(raw["protein"], path, "protein")
    return kwargs


def recipe_info(path) -> dict:
    """The recipe's ``name`` (default: the file stem), ``description`` and resolved path."""
    path = Path(path)
    raw = _read_yaml(path)
    return {"name": str(raw.get("name", path.stem)), "description": raw.get("description"), "path": str(path.resolve())}


def _read_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise InputError(
            f"recipe {path} does not exist; give the path of a YAML recipe such as systems/toluene-water.yaml."
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"recipe {path} is not valid YAML ({exc}); fix its syntax.") from None
    if not isinstance(raw, dict):
        raise InputError(f"recipe {path} must be a YAML mapping of keys (ligands, protein, padding, ...).")
    return raw


def _ligand(entry, role: str, recipe: Path) -> Ligand:
    if not isinstance(entry, dict):
        entry = {"source": entry}
    unknown = sorted(set(entry) - set(LIGAND_KEYS))
    if unknown or "source" not in entry:
        raise InputError(
            f"recipe {recipe}: {role} entry {entry!r} needs 'source' and may have only {', '.join(LIGAND_KEYS)}."
        )
    source = entry["source"]
    if isinstance(source, dict) and set(source) == {"smiles"}:
        resolved = str(source["smiles"])
    elif isinstance(source, str) and not _is_relative_file(source, recipe):
        resolved = source  # a SMILES string
    else:
        resolved = _resolve_file(source, recipe, role)
    return Ligand(resolved, resname=str(entry.get("resname", "LIG")), name=entry.get("name"), role=role)


def _is_relative_file(text: str, recipe: Path) -> bool:
    return text.lower().endswith(FILE_SUFFIXES + (".pdb", ".cif")) or (recipe.parent / text).is_file()


def _resolve_file(source, recipe: Path, what: str) -> str:
    """Absolute path of ``{path}``, ``{package, path}`` or a path string relative to the recipe."""
    if isinstance(source, str):
        source = {"path": source}
    if not isinstance(source, dict) or "path" not in source or not set(source) <= {"path", "package"}:
        raise InputError(
            f"recipe {recipe}: {what} source {source!r} must be a path, {{path: ...}}, {{package: ..., path: ...}} "
            "or {smiles: ...}."
        )
    if "package" in source:
        try:
            root = importlib.resources.files(source["package"])
        except ModuleNotFoundError:
            raise InputError(
                f"recipe {recipe}: package {source['package']!r} is not installed; install it or use a file path."
            ) from None
        resolved = Path(str(root.joinpath(source["path"])))
    else:
        resolved = (recipe.parent / source["path"]).resolve()
    if not resolved.is_file():
        raise InputError(f"recipe {recipe}: {what} file {resolved} does not exist; fix the path in the recipe.")
    return str(resolved)
