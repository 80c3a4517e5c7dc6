"""Force-field, water-model, charge-method and constraint names accepted by the builder.

Each ``check_*`` function turns a user-facing name into what OpenMM / OpenFF need, or raises
:class:`~mlmm.errors.InputError` listing the names that would work.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from functools import lru_cache

import openmm.app as app

from ..errors import InputError

DEFAULT_SMALL_MOLECULE_FORCEFIELD = "openff-2.2.1"
DEFAULT_PROTEIN_FORCEFIELD = "amber/ff14SB.xml"
#: the NAGL graph model that reproduces AM1-BCC charges, shipped by openff-nagl-models (offline)
NAGL_MODEL = "openff-gnn-am1bcc-1.0.0.pt"
CHARGE_METHODS = ("nagl", "am1bcc")


@dataclass(frozen=True)
class WaterModel:
    """A water model: its OpenMM force-field file (water plus matching ion parameters) and
    the pre-equilibrated box ``Modeller.addSolvent`` fills the solvent with."""

    name: str
    ffxml: str
    modeller_model: str


#: 4-site models (OPC, TIP4P-Ew) are placed from OpenMM's TIP4P-Ew box; the force field's
#: virtual site then follows its own geometry.
WATER_MODELS = {
    "tip3p": WaterModel("tip3p", "amber/tip3p_standard.xml", "tip3p"),
    "opc": WaterModel("opc", "amber/opc_standard.xml", "tip4pew"),
    "tip4pew": WaterModel("tip4pew", "amber/tip4pew_standard.xml", "tip4pew"),
}

CONSTRAINTS = {"none": None, "hbonds": app.HBonds, "allbonds": app.AllBonds, "hangles": app.HAngles}


def installed_small_molecule_forcefields() -> list[str]:
    """Names of the SMIRNOFF (OpenFF) small-molecule force fields installed here."""
    from openmmforcefields.generators import SMIRNOFFTemplateGenerator

    return sorted(name for name in SMIRNOFFTemplateGenerator.INSTALLED_FORCEFIELDS if name.startswith("openff-"))


def check_small_molecule_forcefield(name: str) -> str:
    """Return ``name`` if it is an installed OpenFF force field (e.g. ``openff-2.2.1``)."""
    name = str(name).removesuffix(".offxml")
    installed = installed_small_molecule_forcefields()
    if name not in installed:
        raise InputError(
            f"unknown small-molecule force field {name!r}; use one of the installed OpenFF force fields: "
            f"{', '.join(installed)}."
        )
    return name


def check_protein_forcefield(name: str) -> str:
    """Return ``name`` if OpenMM can load it as a force-field file (e.g. ``amber/ff14SB.xml``;
    openmmforcefields' files are found through OpenMM's force-field folder entry point)."""
    try:
        app.ForceField(name)
    except (ValueError, OSError) as exc:
        raise InputError(
            f"unknown protein force field {name!r} ({exc}); use an OpenMM force-field file such as "
            f"'{DEFAULT_PROTEIN_FORCEFIELD}' or 'amber14/protein.ff14SB.xml'."
        ) from None
    return name


def check_water_model(name: str) -> WaterModel:
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in WATER_MODELS:
        raise InputError(f"unknown water model {name!r}; use one of {', '.join(WATER_MODELS)}.")
    return WATER_MODELS[key]


def check_charge_method(name: str) -> str:
    method = str(name).lower().replace("-", "")
    if method not in CHARGE_METHODS:
        raise InputError(
            f"unknown charge method {name!r}; use 'nagl' (offline, default) or 'am1bcc' (needs AmberTools)."
        )
    if method == "am1bcc" and shutil.which("sqm") is None:
        raise InputError(
            "charge method 'am1bcc' needs AmberTools' sqm, which is not installed; use 'nagl' "
            f"(the {NAGL_MODEL} model, trained to reproduce AM1-BCC) or install AmberTools."
        )
    return method


def check_constraints(name):
    """Return the OpenMM constraint setting for ``none``, ``hbonds``, ``allbonds`` or ``hangles``."""
    key = "none" if name is None else str(name).lower()
    if key not in CONSTRAINTS:
        raise InputError(f"unknown constraints {name!r}; use one of {', '.join(CONSTRAINTS)}.")
    return CONSTRAINTS[key]


@lru_cache(maxsize=None)
def covered_elements(small_molecule_forcefield: str) -> frozenset[int]:
    """Atomic numbers that the force field gives their own van der Waals type.

    Read from the vdW section: every SMIRKS whose tagged atom names one element (``[#6X4:1]``).
    Elements outside this set would fall through to generic parameters, so the builder
    refuses them.
    """
    from openff.toolkit import ForceField

    forcefield = ForceField(f"{small_molecule_forcefield}.offxml", load_plugins=False)
    tagged = re.compile(r"\[#(\d+)[^\],;]*:1\]")
    elements = set()
    for parameter in forcefield.get_parameter_handler("vdW").parameters:
        elements.update(int(match) for match in tagged.findall(parameter.smirks))
    return frozenset(elements)
