"""The FreeSolv hydration free-energy database and mlmm's 10-molecule development set.

The database (v0.52, a semicolon-separated text file; Mobley and Guthrie, J. Comput.-Aided
Mol. Des. 28, 711 (2014)) is not shipped with mlmm. It is found, in this order, at the
path given explicitly, at ``$MLMM_FREESOLV``, or at ``../shared/data/freesolv/database.txt``
relative to the repository root. Its values are in kcal/mol; :class:`FreeSolvEntry`
holds them converted to kJ/mol.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from ..errors import InputError
from ..units import KJ_PER_KCAL

#: environment variable naming the FreeSolv database file
FREESOLV_ENV = "MLMM_FREESOLV"
#: where the database lies relative to the repository root
DEFAULT_RELATIVE_PATH = Path("..") / "shared" / "data" / "freesolv" / "database.txt"


@dataclass(frozen=True)
class FreeSolvEntry:
    """One molecule: id, SMILES, name, experimental and GAFF (calculated) dG_hyd in kJ/mol."""

    id: str
    smiles: str
    name: str
    experimental: float | None = None
    experimental_error: float | None = None
    gaff: float | None = None
    gaff_error: float | None = None


def repository_root() -> Path:
    """The folder holding the ``mlmm`` package (the repository root in a checkout)."""
    return Path(__file__).resolve().parents[2]


def freesolv_path(path: str | os.PathLike | None = None) -> Path:
    """The FreeSolv database file: ``path``, else ``$MLMM_FREESOLV``, else the default location."""
    if path is not None:
        candidate, origin = Path(path), "the path given"
    elif os.environ.get(FREESOLV_ENV):
        candidate, origin = Path(os.environ[FREESOLV_ENV]), f"${FREESOLV_ENV}"
    else:
        candidate, origin = (repository_root() / DEFAULT_RELATIVE_PATH).resolve(), "the default location"
    if not candidate.is_file():
        raise InputError(
            f"FreeSolv database not found at {candidate} ({origin}); pass its path (--freesolv) or set "
            f"${FREESOLV_ENV} to the database.txt of FreeSolv v0.52."
        )
    return candidate


def _number(text: str) -> float | None:
    text = text.strip()
    return float(text) * KJ_PER_KCAL if text else None


def load_freesolv(path: str | os.PathLike | None = None) -> dict[str, FreeSolvEntry]:
    """All entries of the database, by id (``mobley_...``)."""
    source = freesolv_path(path)
    entries = {}
    for number, line in enumerate(source.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(";")]
        if len(fields) < 7:
            raise InputError(f"{source}:{number} has {len(fields)} fields, expected at least 7; is this FreeSolv's database.txt?")
        try:
            entries[fields[0]] = FreeSolvEntry(
                id=fields[0], smiles=fields[1], name=fields[2], experimental=_number(fields[3]),
                experimental_error=_number(fields[4]), gaff=_number(fields[5]), gaff_error=_number(fields[6]),
            )
        except ValueError:
            raise InputError(f"{source}:{number} has a value that is not a number: {line!r}") from None
    return entries


def freesolv_entries(ids, path: str | os.PathLike | None = None) -> list[FreeSolvEntry]:
    """The entries for ``ids``, in that order."""
    database = load_freesolv(path)
    missing = [i for i in ids if i not in database]
    if missing:
        raise InputError(f"FreeSolv ids {missing} are not in {freesolv_path(path)}; ids look like 'mobley_1636752'.")
    return [database[i] for i in ids]


def canonical_smiles(smiles: str) -> str | None:
    """RDKit's canonical isomeric SMILES of ``smiles``, or None when RDKit cannot read it."""
    from rdkit import Chem, rdBase

    with rdBase.BlockLogs():  # an unreadable SMILES is the builder's to refuse, with its own message
        molecule = Chem.MolFromSmiles(smiles)
    return None if molecule is None else Chem.MolToSmiles(molecule)


def with_freesolv_references(smiles, path: str | os.PathLike | None = None) -> list[FreeSolvEntry | str]:
    """Each SMILES as the FreeSolv entry of the same molecule (id, name, experimental and GAFF
    values) where the database has one, else as it was.

    Molecules are compared by RDKit's canonical isomeric SMILES, so ``OC`` finds methanol; a SMILES
    without the stereochemistry of an entry does not match it. Raises :class:`InputError` when the
    database is not found (:func:`freesolv_path`).
    """
    by_canonical: dict[str | None, FreeSolvEntry] = {}
    for entry in load_freesolv(path).values():
        by_canonical.setdefault(canonical_smiles(entry.smiles), entry)
    by_canonical.pop(None, None)  # an unreadable SMILES matches nothing
    return [by_canonical.get(canonical_smiles(text), text) for text in smiles]


def devset_ids() -> list[str]:
    """Ids of the 10-molecule development set (``mlmm/freeenergy/data/devset.yaml``)."""
    import yaml

    data = yaml.safe_load(files("mlmm.freeenergy").joinpath("data/devset.yaml").read_text())
    return [molecule["id"] for molecule in data["molecules"]]
