"""A leg: one lambda path through one system, in a form that travels to any worker.

Every window of a leg runs as its own task, possibly in another process or on another
machine, so a :class:`Leg` carries a *recipe* for its ``openmm.System`` rather than the
System itself: a deserialized ``TorchForce`` crashes openmm-torch, so ML/MM systems are
rebuilt in the worker from the :class:`~mlmm.molecular_system.MolecularSystem` (pure MM,
safe to pickle) and the model name. Three recipes:

- :class:`SerializedSystem`: any System without a TorchForce, as XML;
- :class:`MixedSystemRecipe`: ``mlmm.embedding.create_mixed_system`` (LAMBDA_ML path);
- :class:`DecoupledSystemRecipe`: openmmtools' ``AbsoluteAlchemicalFactory`` applied to
  a region (``lambda_electrostatics`` / ``lambda_sterics`` path).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import openmm

from ..errors import InputError
from ..regions import resolve_region
from .states import decoupling_states, endstate_states


@dataclass(frozen=True)
class SerializedSystem:
    """An MM System (no TorchForce) carried as XML."""

    xml: str

    @classmethod
    def from_system(cls, system: openmm.System) -> "SerializedSystem":
        xml = openmm.XmlSerializer.serialize(system)
        if 'type="TorchForce"' in xml:
            raise InputError(
                "this System contains a TorchForce, which cannot be rebuilt safely from XML; "
                "describe it with MixedSystemRecipe (MolecularSystem + model name) instead."
            )
        return cls(xml)

    def create(self) -> openmm.System:
        return openmm.XmlSerializer.deserialize(self.xml)


@dataclass(frozen=True)
class MixedSystemRecipe:
    """``create_mixed_system(molecular_system, model, region, embedding, model_options)``."""

    molecular_system: object  # MolecularSystem
    model: str
    embedding: str = "mechanical"
    region: str | tuple = "ligand"
    model_options: dict | None = None

    def create(self) -> openmm.System:
        from ..embedding.mixed import create_mixed_system

        mixed = create_mixed_system(
            self.molecular_system, model=self.model, region=self.region, embedding=self.embedding,
            model_options=self.model_options, lambda_value=1.0,
        )
        return mixed.system


@dataclass(frozen=True)
class DecoupledSystemRecipe:
    """The MM System with ``region`` made alchemical: electrostatics annihilated, sterics decoupled.

    ``lambda_electrostatics`` scales the region's charges (inside the region too: the same
    happens in every phase, so it cancels in a hydration cycle); ``lambda_sterics`` switches
    the region's Lennard-Jones interactions with everything else through soft-core, keeping
    its internal Lennard-Jones intact.
    """

    molecular_system: object  # MolecularSystem
    region: str | tuple = "ligand"

    def create(self) -> openmm.System:
        from openmmtools.alchemy import AbsoluteAlchemicalFactory, AlchemicalRegion

        atoms = resolve_region(self.molecular_system, self.region).tolist()
        alchemical_region = AlchemicalRegion(alchemical_atoms=atoms, annihilate_electrostatics=True, annihilate_sterics=False)
        return AbsoluteAlchemicalFactory().create_alchemical_system(self.molecular_system.system, alchemical_region)


@dataclass(frozen=True)
class Leg:
    """One lambda path: a System recipe, starting coordinates (nm) and the ordered states.

    ``states[0]`` and ``states[-1]`` are the end states; the leg's free energy is
    G(states[-1]) - G(states[0]).
    """

    name: str
    recipe: object  # SerializedSystem | MixedSystemRecipe | DecoupledSystemRecipe
    positions: np.ndarray
    box_vectors: np.ndarray | None
    states: tuple = field(default_factory=tuple)

    def __post_init__(self):
        object.__setattr__(self, "positions", np.asarray(self.positions, dtype=np.float64).reshape(-1, 3))
        object.__setattr__(self, "states", tuple(self.states))
        if len(self.states) < 2:
            raise InputError(f"leg {self.name!r} has {len(self.states)} state(s); a lambda path needs at least two.")

    @property
    def n_states(self) -> int:
        return len(self.states)

    def create_system(self) -> openmm.System:
        return self.recipe.create()


def endstate_leg(molecular_system, model: str, embedding: str, protocol, region="ligand", model_options=None,
                 name: str | None = None) -> Leg:
    """The MM -> ML/MM path (LAMBDA_ML from 0 to 1) of ``molecular_system``."""
    if not model:
        raise InputError("an end-state correction needs an ML model (for example model='aimnet2').")
    region = region if isinstance(region, str) else tuple(int(i) for i in region)
    recipe = MixedSystemRecipe(molecular_system, model, embedding, region, model_options)
    return Leg(name or f"endstate-{embedding}", recipe, molecular_system.positions, molecular_system.box_vectors,
               endstate_states(protocol.endstate_lambdas))


def decoupling_leg(molecular_system, protocol, region="ligand", name: str = "decoupling") -> Leg:
    """The coupled -> decoupled path of ``region`` in ``molecular_system`` (MM).

    When the region is the whole system (a solute in vacuum) there is nothing to decouple
    its Lennard-Jones interactions from: every sterics state would be the same state, so
    the leg stops once the charges are off (``lambda_sterics`` stays 1).
    """
    region = region if isinstance(region, str) else tuple(int(i) for i in region)
    atoms = resolve_region(molecular_system, region)  # fail early, here, on a bad region
    sterics = protocol.sterics_lambdas if len(atoms) < molecular_system.n_atoms else (1.0,)
    recipe = DecoupledSystemRecipe(molecular_system, region)
    return Leg(name, recipe, molecular_system.positions, molecular_system.box_vectors,
               decoupling_states(protocol.electrostatics_lambdas, sterics))
