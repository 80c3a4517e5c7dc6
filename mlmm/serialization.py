"""Saving and restoring an OpenMM System that holds openmm-torch ``TorchForce`` objects.

``openmm.XmlSerializer.deserialize`` of a ``TorchForce`` crashes the interpreter
(segmentation fault) with the openmmtorch 1.5 wheel and OpenMM 8.6: the wheel was built
against OpenMM <= 8.5, whose ``SerializationNode`` stored properties in a ``std::map``;
8.6 packs them in a string, and code compiled into the wheel still uses the old layout (the same
wheel deserializes fine with OpenMM 8.5.2). So a System holding a TorchForce cannot be
restored from OpenMM's XML here. :func:`save_system` therefore writes every TorchForce apart::

    folder/system.xml          the System by XmlSerializer, with no TorchForce in it
    folder/torch_forces.json   manifest: where each TorchForce was and how it was set up
    folder/torch_force_K.pt    the TorchScript module of each TorchForce

A TorchForce at the top level of the System is removed from the XML; one that is a
collective variable of a ``CustomCVForce`` is removed from that force's variables. The
manifest records its position (force index, and collective-variable index and name),
force group, name, ``outputsForces``, periodicity, properties, global parameters and
energy-parameter derivatives. :func:`load_system` deserializes only TorchForce-free XML
(the System without forces, then each force on its own), rebuilds every affected
``CustomCVForce`` (expression, global parameters, energy-parameter derivatives, tabulated
functions, the other variables) with its TorchForce variables back in their places, and
adds all forces in their original order. The folder is written atomically.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import openmm

from .atomic_io import atomic_directory
from .errors import InputError, MlmmError

SYSTEM_FILE = "system.xml"
MANIFEST_FILE = "torch_forces.json"
FORMAT_VERSION = 1


def _torch_force_class():
    import torch  # noqa: F401, I001  (libtorch must be loaded before openmmtorch's extension)
    import openmmtorch

    return openmmtorch.TorchForce


def _describe(torch_force, module_file: str, force_index: int, variable: dict | None) -> dict:
    properties = torch_force.getProperties()
    return {
        "force_index": force_index,
        "collective_variable": variable,
        "module": module_file,
        "force_group": torch_force.getForceGroup(),
        "name": torch_force.getName(),
        "outputs_forces": bool(torch_force.getOutputsForces()),
        "periodic": bool(torch_force.usesPeriodicBoundaryConditions()),
        "properties": {key: properties[key] for key in properties},
        "global_parameters": [
            {"name": torch_force.getGlobalParameterName(i), "default": torch_force.getGlobalParameterDefaultValue(i)}
            for i in range(torch_force.getNumGlobalParameters())
        ],
        "energy_parameter_derivatives": [
            torch_force.getEnergyParameterDerivativeName(i) for i in range(torch_force.getNumEnergyParameterDerivatives())
        ],
    }


def save_system(system: openmm.System, folder: str | Path, overwrite: bool = False) -> Path:
    """Write ``system`` to ``folder`` so that :func:`load_system` restores it without a crash.

    Nothing appears at ``folder`` unless every file was written. TorchForces may sit at the
    top level or be collective variables of a top-level ``CustomCVForce``; one nested
    deeper raises :class:`MlmmError`.
    """
    TorchForce = _torch_force_class()
    entries: list[dict] = []
    modules = []
    top_level: set[int] = set()
    in_cv: dict[int, set[int]] = {}
    for i in range(system.getNumForces()):
        force = system.getForce(i)
        if TorchForce.isinstance(force):
            torch_force = TorchForce.cast(force)
            entries.append(_describe(torch_force, f"torch_force_{len(modules)}.pt", i, None))
            modules.append(torch_force.getModule())
            top_level.add(i)
        elif isinstance(force, openmm.CustomCVForce):
            for j in range(force.getNumCollectiveVariables()):
                variable = force.getCollectiveVariable(j)
                if TorchForce.isinstance(variable):
                    torch_force = TorchForce.cast(variable)
                    cv = {"index": j, "name": force.getCollectiveVariableName(j)}
                    entries.append(_describe(torch_force, f"torch_force_{len(modules)}.pt", i, cv))
                    modules.append(torch_force.getModule())
                    in_cv.setdefault(i, set()).add(j)

    root = ET.fromstring(openmm.XmlSerializer.serialize(system))
    forces = root.find("Forces")
    elements = list(forces)
    for i, element in enumerate(elements):
        if i in top_level:
            forces.remove(element)
        elif i in in_cv:
            variables = element.find("CollectiveVariables")
            for j, variable in enumerate(list(variables)):
                if j in in_cv[i]:
                    variables.remove(variable)
    xml = ET.tostring(root, encoding="unicode")
    if 'type="TorchForce"' in xml:
        raise MlmmError(
            "the System holds a TorchForce nested deeper than one CustomCVForce; save_system handles "
            "TorchForces at the top level or as collective variables of a top-level CustomCVForce only."
        )
    manifest = {"format_version": FORMAT_VERSION, "n_forces": system.getNumForces(), "torch_forces": entries}
    folder = Path(folder)
    with atomic_directory(folder, overwrite=overwrite) as tmp:
        for entry, module in zip(entries, modules):
            module.save(str(tmp / entry["module"]))
        (tmp / SYSTEM_FILE).write_text(xml)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    return folder


def _build_torch_force(folder: Path, entry: dict):
    import torch

    TorchForce = _torch_force_class()
    module = torch.jit.load(str(folder / entry["module"]), map_location="cpu")
    force = TorchForce(module, {str(k): str(v) for k, v in entry["properties"].items()})
    force.setOutputsForces(entry["outputs_forces"])
    force.setUsesPeriodicBoundaryConditions(entry["periodic"])
    force.setForceGroup(entry["force_group"])
    force.setName(entry["name"])
    for parameter in entry["global_parameters"]:
        force.addGlobalParameter(parameter["name"], parameter["default"])
    for name in entry["energy_parameter_derivatives"]:
        force.addEnergyParameterDerivative(name)
    return force


def _deserialize_force(element: ET.Element) -> openmm.Force:
    return openmm.XmlSerializer.deserialize(ET.tostring(element, encoding="unicode"))


def _rebuild_cv_force(folder: Path, element: ET.Element, torch_entries: list[dict]) -> openmm.CustomCVForce:
    """A CustomCVForce from its TorchForce-free XML plus its TorchForce variables, in order."""
    variables = element.find("CollectiveVariables")
    remaining = list(variables)
    for variable in remaining:
        variables.remove(variable)
    cv_force = _deserialize_force(element)  # expression, parameters, derivatives, functions; no variables
    by_index = {entry["collective_variable"]["index"]: entry for entry in torch_entries}
    for j in range(len(remaining) + len(torch_entries)):
        if j in by_index:
            entry = by_index[j]
            cv_force.addCollectiveVariable(entry["collective_variable"]["name"], _build_torch_force(folder, entry))
        else:
            variable = remaining.pop(0)
            cv_force.addCollectiveVariable(variable.get("name"), _deserialize_force(variable.find("Force")))
    return cv_force


def load_system(folder: str | Path) -> openmm.System:
    """Restore a System written by :func:`save_system`, TorchForces included, in the original order."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file() or not (folder / SYSTEM_FILE).is_file():
        raise InputError(
            f"{folder} is not a folder written by mlmm.serialization.save_system (no {MANIFEST_FILE} or "
            f"{SYSTEM_FILE}); save the System with save_system()."
        )
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"{manifest_path} has format version {manifest.get('format_version')!r}; this mlmm reads version "
            f"{FORMAT_VERSION}. Save the System again with this version."
        )
    root = ET.fromstring((folder / SYSTEM_FILE).read_text())
    forces = root.find("Forces")
    xml_forces = list(forces)
    for element in xml_forces:
        forces.remove(element)
    system = openmm.XmlSerializer.deserialize(ET.tostring(root, encoding="unicode"))

    top_level = {e["force_index"]: e for e in manifest["torch_forces"] if e["collective_variable"] is None}
    in_cv: dict[int, list[dict]] = {}
    for entry in manifest["torch_forces"]:
        if entry["collective_variable"] is not None:
            in_cv.setdefault(entry["force_index"], []).append(entry)
    if len(xml_forces) + len(top_level) != manifest["n_forces"]:
        raise InputError(
            f"{folder} is inconsistent: {len(xml_forces)} forces in {SYSTEM_FILE} and {len(top_level)} TorchForces "
            f"do not make the {manifest['n_forces']} forces the manifest lists; save the System again."
        )
    remaining = iter(xml_forces)
    for i in range(manifest["n_forces"]):
        if i in top_level:
            system.addForce(_build_torch_force(folder, top_level[i]))
        elif i in in_cv:
            system.addForce(_rebuild_cv_force(folder, next(remaining), in_cv[i]))
        else:
            system.addForce(_deserialize_force(next(remaining)))
    return system
