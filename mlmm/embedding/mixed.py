"""Create an ML/MM System from a MolecularSystem: the public entry point of the embedding.

``create_mixed_system`` leaves the complete MM force field in place (force group
:data:`~mlmm.forcegroups.MM_FAST`, its reciprocal space in :data:`~mlmm.forcegroups.MM_SLOW`:
:func:`mlmm.splitting.assign_force_groups`) and adds forces in group
:data:`~mlmm.forcegroups.ML_SLOW` with the summed energy::

    lambda_ml * (ml - mm_region)

- ``ml``: a TorchForce (named :data:`ML_FORCE_NAME`) evaluating the ML model on the region
  (made whole under periodic boundaries); with electrostatic embedding it also holds the
  coupling of the ML charges to the MM charges (:mod:`mlmm.embedding.electrostatic`); a
  region that cuts covalent bonds is capped with link hydrogens when ``link_atoms=True``
  (:mod:`mlmm.embedding.link_atoms`);
- ``mm_region``: the MM energy of the region alone, bonded and nonbonded
  (:mod:`mlmm.embedding.mm_region`; its nonbonded part over the region's atom pairs, or
  exactly with the region's periodic images when ``mm_region="box"``), one force per kind of
  term (named :data:`MM_REGION_FORCE_NAME`), each scaled by ``-lambda_ml`` in its own
  expression.

So ``lambda_ml = 1`` gives ``V_MM(all) - V_MM(region) + V_ML(region) [+ coupling]`` and
``lambda_ml = 0`` gives pure MM; every one of these forces declares
``addEnergyParameterDerivative`` so OpenMM reports dU/dlambda = ``ml - mm_region``. The same
split is the difference splitting of multiple-time-step integration: MM every inner step, the
ML correction every k steps.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as u
import torch

from .. import forcegroups
from ..atomic_io import atomic_directory
from ..errors import InputError
from ..ml_force import create_ml_module, create_torch_force
from ..molecular_system import MolecularSystem
from ..potentials import PotentialPlugin, load_plugin
from ..regions import bonds_cut_by, resolve_region
from ..splitting import assign_force_groups
from ..torch_geometry import central_atom
from . import LAMBDA_ML
from .link_atoms import LinkAtoms, create_linked_module, link_atoms_for, ml_coordinates, redistributed_charges
from .mm_region import NONBONDED_METHODS, region_mm_forces
from .scaling import lambda_scaled

#: mechanical (subtractive); electrostatic (ML charges coupled to the MM charges); polarizable
#: (electrostatic plus induced dipoles on the region's atoms)
EMBEDDINGS = ("mechanical", "electrostatic", "polarizable")
ML_FORCE_NAME = "MLRegion"
MM_REGION_FORCE_NAME = "MMRegion"
MIXED_FILE = "mixed.json"


@dataclass
class MixedSystem:
    """An ML/MM OpenMM System together with what it was made from."""

    system: openmm.System
    molecular_system: MolecularSystem
    region: np.ndarray
    embedding: str
    model: str
    model_options: dict = field(default_factory=dict)
    region_model: torch.jit.ScriptModule | None = None
    reports_std: bool = False  # the region model returns "energy_std" (an ensemble)
    link_atoms: LinkAtoms | None = None  # hydrogen caps of the bonds the region cuts
    _region_context: openmm.Context | None = field(default=None, init=False, repr=False, compare=False)

    def energy_terms(self, context: openmm.Context) -> dict[str, float]:
        """Energies (kJ/mol) of the current state: ``mm``, ``ml``, ``mm_region``, ``ml_correction``.

        ``mm`` is the complete MM force field (groups MM_FAST and MM_SLOW), ``ml`` the ML region energy (with the
        electrostatic coupling when that embedding is used), ``mm_region`` the MM energy of the
        region alone, ``ml_correction`` the slow group, lambda * (ml - mm_region). ``ml`` comes
        from dU/dlambda of the slow group, so it is known at every lambda. With an ensemble
        model ``ml_std`` is the spread of its members (one extra model call).
        """
        slow = forcegroups.group_mask(forcegroups.ML_SLOW)
        state = context.getState(getEnergy=True, getParameterDerivatives=True, groups=slow)
        mm_region = self.mm_region_energy(context)
        terms = {
            "mm": _group_energy(context, *forcegroups.MM_GROUPS),
            "ml": state.getEnergyParameterDerivatives()[LAMBDA_ML] + mm_region,
            "mm_region": mm_region,
            "ml_correction": state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole),
        }
        if self.reports_std and self.region_model is not None:
            terms["ml_std"] = self.ml_std(context)
        return terms

    def mm_region_energy(self, context: openmm.Context) -> float:
        """E_MM(region) (kJ/mol) at the context's positions and box.

        Evaluated by copies of the System's :data:`MM_REGION_FORCE_NAME` forces at lambda_ml = 1
        (energy ``-E_MM(region)``) in a Context of their own on the context's platform, built
        on the first call; the slow group sums them with the ML force, so its energy alone
        cannot separate them. One evaluation costs a copy of the positions, not a model call.
        """
        if self._region_context is None:
            region_system = openmm.System()
            for index in range(self.system.getNumParticles()):
                region_system.addParticle(self.system.getParticleMass(index))
            region_system.setDefaultPeriodicBoxVectors(*self.system.getDefaultPeriodicBoxVectors())
            for force in self.system.getForces():
                if force.getName() == MM_REGION_FORCE_NAME:
                    region_system.addForce(copy.deepcopy(force))
            if region_system.getNumForces() == 0:
                return 0.0
            self._region_context = openmm.Context(region_system, openmm.VerletIntegrator(0.001), context.getPlatform())
            self._region_context.setParameter(LAMBDA_ML, 1.0)
        state = context.getState(getPositions=True)
        self._region_context.setPeriodicBoxVectors(*state.getPeriodicBoxVectors())
        self._region_context.setPositions(state.getPositions())
        energy = self._region_context.getState(getEnergy=True).getPotentialEnergy()
        return -energy.value_in_unit(u.kilojoule_per_mole)

    def ml_std(self, context: openmm.Context) -> float:
        """Ensemble spread (kJ/mol) of the ML energy of the region at the context's positions."""
        state = context.getState(getPositions=True)
        positions = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
        periodic = self.molecular_system.is_periodic
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer) if periodic else None
        coordinates = ml_coordinates(self.region, self.link_atoms, positions, box)
        with torch.no_grad():
            return float(self.region_model(coordinates.to(torch.float32))["energy_std"])

    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Save the MolecularSystem, the mixed System and the options; no TorchForce XML is written."""
        from ..serialization import save_system

        folder = Path(folder)
        with atomic_directory(folder, overwrite=overwrite) as tmp:
            self.molecular_system.save(tmp / "molecular_system")
            save_system(self.system, tmp / "system")
            if self.region_model is not None:
                self.region_model.save(str(tmp / "region_model.pt"))
            (tmp / MIXED_FILE).write_text(json.dumps({
                "region": self.region.tolist(), "embedding": self.embedding, "model": self.model,
                "model_options": self.model_options, "reports_std": self.reports_std,
                "link_atoms": None if self.link_atoms is None else self.link_atoms.to_dict(),
            }, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "MixedSystem":
        """Reload a folder written by :meth:`save`, re-attaching the TorchForce from its module file."""
        from ..serialization import load_system

        folder = Path(folder)
        if not (folder / MIXED_FILE).is_file():
            raise InputError(f"{folder} is not a saved ML/MM system (no {MIXED_FILE}).")
        meta = json.loads((folder / MIXED_FILE).read_text())
        region_model_file = folder / "region_model.pt"
        return cls(
            system=load_system(folder / "system"),
            molecular_system=MolecularSystem.load(folder / "molecular_system"),
            region=np.array(meta["region"], dtype=np.int64),
            embedding=meta["embedding"],
            model=meta["model"],
            model_options=meta["model_options"],
            region_model=torch.jit.load(str(region_model_file)) if region_model_file.exists() else None,
            reports_std=meta["reports_std"],
            link_atoms=LinkAtoms.from_dict(meta["link_atoms"]) if meta.get("link_atoms") else None,
        )


def create_mixed_system(
    molecular_system: MolecularSystem,
    model: str | PotentialPlugin = "aimnet2",
    region="ligand",
    embedding: str = "mechanical",
    model_options: dict | None = None,
    lambda_value: float = 1.0,
    coupling_cutoff=None,
    link_atoms: bool = False,
    mm_region: str = "pairs",
) -> MixedSystem:
    """Embed an ML potential for ``region`` in the MM system of ``molecular_system``.

    Parameters
    ----------
    model: a plugin name (``mlmm models`` lists them) or a :class:`PotentialPlugin`.
    model_options: options for the plugin (for example ``{"path": "my_model.pt"}``). The
        plugin also gets the region's coordinates in the built system (``positions``, made
        whole, with any link atoms), on which a user's TorchScript file has its units checked.
    region: a region name, ``"resname XYZ"``, an MDTraj selection or atom indices; the
        ligand by default. Its total charge comes from the building metadata.
    embedding: ``"mechanical"`` (subtractive), ``"electrostatic"`` (the model's charges, which
        depend on the region's geometry, interact with the MM charges) or ``"polarizable"``
        (electrostatic plus the induction energy of Thole-damped dipoles on the region's
        atoms in the MM field; :mod:`mlmm.embedding.electrostatic`).
    lambda_value: initial value of the global parameter ``lambda_ml`` (0 = MM, 1 = ML/MM).
    coupling_cutoff: cutoff of the electrostatic and polarizable coupling (nm or Quantity);
        default the MM nonbonded cutoff, or 1.2 nm without one.
    link_atoms: cap each covalent bond the region cuts with a link hydrogen
        (:mod:`mlmm.embedding.link_atoms`); without it such a region is refused.
    mm_region: how the region's own MM nonbonded energy is subtracted: ``"pairs"`` (its atom
        pairs, minimum image; cost independent of the box) or ``"box"`` (exact, including the
        region's periodic images; a whole-box PME per evaluation). See
        :mod:`mlmm.embedding.mm_region`.
    """
    if embedding not in EMBEDDINGS:
        raise InputError(f"unknown embedding {embedding!r}; choose one of {', '.join(EMBEDDINGS)}.")
    if mm_region not in NONBONDED_METHODS:
        raise InputError(f"unknown mm_region {mm_region!r}; choose one of {', '.join(NONBONDED_METHODS)}.")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise InputError(f"lambda_value = {lambda_value} is outside [0, 1].")
    indices = resolve_region(molecular_system, region)
    cut = bonds_cut_by(molecular_system, indices)
    if cut and not link_atoms:
        atoms = list(molecular_system.topology.atoms())
        shown = ", ".join(f"{atoms[i].residue.name}{atoms[i].residue.id}:{atoms[i].name}-"
                          f"{atoms[j].residue.name}{atoms[j].residue.id}:{atoms[j].name}" for i, j in cut[:4])
        raise InputError(
            f"region {region!r} cuts {len(cut)} covalent bond(s) ({shown}); pass link_atoms=True (mlmm run: --link-atoms) to cap them with "
            "hydrogens, or select whole molecules or residues (e.g. 'resname LIG' or 'residue 100 to 102')."
        )
    links = link_atoms_for(molecular_system, indices) if cut else None
    plugin = load_plugin(model) if isinstance(model, str) else model
    atomic_numbers = molecular_system.atomic_numbers[indices]
    model_numbers = atomic_numbers if links is None else np.concatenate([atomic_numbers, links.atomic_numbers])
    total_charge = molecular_system.total_charge(indices)  # the link hydrogens are neutral caps
    plugin.check_region(model_numbers, total_charge)
    if embedding != "mechanical" and plugin.provides_charges is False:
        raise InputError(
            f"model '{plugin.name}' predicts no atomic charges, which {embedding} embedding needs; "
            "use embedding='mechanical' or a model with charges (aimnet2)."
        )
    model_options = dict(model_options or {})
    anchor = central_atom(torch.as_tensor(molecular_system.positions[indices]))
    coordinates = ml_coordinates(indices, links, molecular_system.positions, molecular_system.box_vectors, anchor)
    region_model = plugin.create_model(model_numbers.tolist(), total_charge,
                                       **{"positions": coordinates.numpy(), **model_options})
    with torch.no_grad():
        outputs = region_model(coordinates.to(torch.float32))
    if embedding != "mechanical" and "charges" not in outputs:
        raise InputError(
            f"the {plugin.name} model returns no 'charges', which {embedding} embedding needs; use "
            "embedding='mechanical' or a model whose forward also returns 'charges' ((n,) e)."
        )

    system = assign_force_groups(_copy_system(molecular_system.system))
    periodic = system.usesPeriodicBoundaryConditions()
    if embedding == "mechanical" and links is None:
        module = create_ml_module(region_model, indices, system.getNumParticles(), periodic, anchor)
    elif embedding == "mechanical":
        module = create_linked_module(region_model, indices, links, system.getNumParticles(), periodic, anchor)
    else:
        module = torch.jit.script(_electrostatic_module(system, region_model, indices, periodic, coupling_cutoff,
                                                        embedding == "polarizable", atomic_numbers, anchor, links,
                                                        molecular_system.topology))
    for force in _correction_forces(system, module, indices, periodic, lambda_value, mm_region):
        system.addForce(force)
    return MixedSystem(system, molecular_system, indices, embedding, plugin.name, model_options, region_model,
                       reports_std="energy_std" in outputs, link_atoms=links)


def _correction_forces(system, module, indices, periodic, lambda_value, mm_region) -> list[openmm.Force]:
    """The slow-group forces: lambda * ML (a TorchForce) and -lambda * MM(region), one force per kind of term.

    All declare the global parameter and its energy derivative; OpenMM sums their
    derivatives, so dU/dlambda = ML - MM(region). The region's MM terms carry the factor in
    their own expressions rather than as variables of a ``CustomCVForce``, whose inner
    Context would copy every particle's positions on each slow step.
    """
    ml_force = create_torch_force(lambda_scaled(module, periodic), periodic=periodic)
    ml_force.setName(ML_FORCE_NAME)
    ml_force.addGlobalParameter(LAMBDA_ML, float(lambda_value))
    ml_force.addEnergyParameterDerivative(LAMBDA_ML)
    region_forces = region_mm_forces(system, indices, mm_region, lambda_parameter=LAMBDA_ML,
                                     lambda_value=float(lambda_value)).values()
    for force in region_forces:
        force.setName(MM_REGION_FORCE_NAME)
    forces = [ml_force, *region_forces]
    for force in forces:
        force.setForceGroup(forcegroups.ML_SLOW)
    return forces


def _electrostatic_module(system, region_model, indices, periodic, coupling_cutoff, polarization, atomic_numbers,
                          anchor, links, topology):
    from ..units import value_in
    from .electrostatic import ChargePotentialEmbedding, ElectrostaticEmbedding, polarizabilities_nm3

    nonbonded = [f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)]
    if len(nonbonded) != 1:
        raise InputError("electrostatic embedding needs exactly one NonbondedForce in the MM System.")
    nonbonded = nonbonded[0]
    charges = np.array([nonbonded.getParticleParameters(i)[0].value_in_unit(u.elementary_charge)
                        for i in range(system.getNumParticles())])
    if links is None:
        coupled = charges.copy()
        coupled[indices] = 0.0
    else:
        coupled = redistributed_charges(topology, charges, indices, links)
    environment = np.flatnonzero(coupled != 0.0)
    if coupling_cutoff is None:
        uses_cutoff = nonbonded.getNonbondedMethod() != openmm.NonbondedForce.NoCutoff
        cutoff = nonbonded.getCutoffDistance().value_in_unit(u.nanometer) if uses_cutoff else 1.2
    else:
        cutoff = value_in(coupling_cutoff, u.nanometer, "coupling_cutoff")
    if periodic:
        box = np.array([v.value_in_unit(u.nanometer) for v in system.getDefaultPeriodicBoxVectors()])
        half_width = 0.5 * min(box[0, 0], box[1, 1], box[2, 2])
        if cutoff > half_width:
            raise InputError(f"coupling cutoff {cutoff} nm exceeds half the box width ({half_width:.3f} nm); "
                             "use a smaller cutoff or a larger box.")
    if cutoff <= 0:
        raise InputError(f"coupling cutoff {cutoff} nm must be positive.")
    alpha = polarizabilities_nm3(atomic_numbers) if polarization else None
    # a model that takes the potential of the MM charges computes its forces itself (the dense AIMNet2: by hand)
    embedding = ChargePotentialEmbedding if hasattr(region_model, "forces_in_potential") else ElectrostaticEmbedding
    return embedding(region_model, indices, environment, coupled[environment], charges[indices], cutoff, periodic,
                     alpha, anchor, links)


def _copy_system(system: openmm.System) -> openmm.System:
    """A deep copy of a pure MM System (safe: it holds no TorchForce)."""
    return copy.deepcopy(system)


def _group_energy(context: openmm.Context, *groups: int) -> float:
    state = context.getState(getEnergy=True, groups=forcegroups.group_mask(*groups))
    return state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)


class MLPotential:
    """An ML potential by plugin name and options: the entry point OpenMM-ML users know.

    ``MLPotential("aimnet2", ensemble=True).create_mixed_system(system, region="ligand",
    embedding="electrostatic")`` is :func:`create_mixed_system` with the model fixed. The
    mixed System always carries the global parameter ``lambda_ml`` (1 = ML/MM, 0 = MM) with
    its energy derivative, so it serves both production runs and free-energy interpolation.
    """

    def __init__(self, name: str, **options):
        self.plugin = load_plugin(name)
        self.options = options

    def create_mixed_system(self, molecular_system: MolecularSystem, region="ligand", embedding: str = "mechanical",
                            **kwargs) -> MixedSystem:
        """Embed this potential for ``region``; keyword arguments as for :func:`create_mixed_system`."""
        return create_mixed_system(molecular_system, self.plugin, region, embedding, self.options, **kwargs)
