"""From a validated :class:`RunConfig` to an OpenMM Context ready to run, writing nothing.

Loads the molecular system (a saved folder or a YAML recipe), embeds the ML model when one
is asked for (:func:`mlmm.embedding.create_mixed_system`), checks the force groups of the
difference splitting, adds the Monte Carlo barostat for a pressure, builds the integrator
(:func:`mlmm.splitting.make_integrator`) and creates the Context on the requested platform,
or on the fastest one that accepts the system.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import openmm
import openmm.unit as u

from ..errors import InputError
from ..forcegroups import MM_FAST
from ..molecular_system import MolecularSystem
from ..regions import resolve_region
from ..splitting import assign_force_groups, check_force_groups, make_integrator
from ..threads import TorchThreadTuner, torch_thread_tuner
from .config import RECIPE_SUFFIXES, RunConfig


@dataclass
class PreparedRun:
    """The objects one run works with."""

    molecular_system: MolecularSystem
    system: openmm.System
    context: openmm.Context
    mixed: object | None  # mlmm.embedding.MixedSystem, or None for pure MM
    degrees_of_freedom: int
    threads: TorchThreadTuner  # steps the integrator with PyTorch's fastest thread count

    def advance(self, steps: int) -> None:
        """Advance the dynamics by ``steps`` (outer) steps."""
        self.threads.step(self.integrator, steps)

    @property
    def integrator(self) -> openmm.Integrator:
        return self.context.getIntegrator()

    @property
    def platform_name(self) -> str:
        return self.context.getPlatform().getName()

    def energy_terms(self) -> dict[str, float]:
        """Energy terms (kJ/mol) of the current state: ``mm`` alone for pure MM, the mixed system's otherwise."""
        if self.mixed is not None:
            return self.mixed.energy_terms(self.context)
        state = self.context.getState(getEnergy=True)
        return {"mm": state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)}


def load_input(path: str | Path) -> MolecularSystem:
    """A saved system folder (``MolecularSystem.load``) or a YAML recipe (``build_from_recipe``)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() in RECIPE_SUFFIXES:
        from ..building import build_from_recipe

        return build_from_recipe(path)
    return MolecularSystem.load(path)


def prepare(config: RunConfig, molecular_system: MolecularSystem) -> PreparedRun:
    """Build System, integrator and Context for ``config`` (already validated) and set the positions."""
    mixed = None
    if config.model is None:
        if config.region is not None:
            resolve_region(molecular_system, config.region)  # a region given for pure MM must still exist
        system = assign_force_groups(copy.deepcopy(molecular_system.system))
    else:
        from ..embedding.mixed import create_mixed_system

        mixed = create_mixed_system(molecular_system, model=config.model, region=config.region or "ligand",
                                    embedding=config.embedding, model_options=config.model_options,
                                    link_atoms=config.link_atoms, mm_region=config.mm_region)
        system = mixed.system
    check_force_groups(system)
    if config.pressure is not None:
        if not system.usesPeriodicBoundaryConditions():
            raise InputError(f"pressure = {config.pressure} bar needs a periodic system; this one is in vacuum.")
        barostat = openmm.MonteCarloBarostat(config.pressure * u.bar, config.temperature * u.kelvin,
                                             config.barostat_interval)
        barostat.setForceGroup(MM_FAST)
        if config.seed is not None:
            barostat.setRandomNumberSeed(config.seed + 1)  # 0 would mean "random" to OpenMM
        system.addForce(barostat)
    context = _create_context(system, config)
    threads = torch_thread_tuner(context)
    context.setPositions(molecular_system.positions)
    if system.usesPeriodicBoundaryConditions():
        context.setPeriodicBoxVectors(*system.getDefaultPeriodicBoxVectors())
    return PreparedRun(molecular_system, system, context, mixed, _degrees_of_freedom(system), threads)


def _create_context(system: openmm.System, config: RunConfig) -> openmm.Context:
    """A Context on ``config.platform``, or on the fastest platform that can create one."""
    def integrator():
        return make_integrator(config.temperature, config.friction, config.inner_timestep, config.mts_factor,
                               config.ensemble, config.seed, constant_pressure=config.pressure is not None)

    if config.platform is not None:
        platform = openmm.Platform.getPlatformByName(config.platform)
        properties = {"Precision": config.precision} if config.precision else {}
        try:
            return openmm.Context(system, integrator(), platform, properties)
        except openmm.OpenMMException as exc:
            raise InputError(f"platform {config.platform} cannot run this system: {exc}") from None
    platforms = sorted((openmm.Platform.getPlatform(i) for i in range(openmm.Platform.getNumPlatforms())),
                       key=lambda p: -p.getSpeed())
    failures = []
    for platform in platforms:
        try:
            return openmm.Context(system, integrator(), platform)
        except openmm.OpenMMException as exc:
            failures.append(f"{platform.getName()}: {exc}")
    raise InputError("no OpenMM platform can run this system: " + "; ".join(failures))


def _degrees_of_freedom(system: openmm.System) -> int:
    """3 per massive particle, minus constraints, minus 3 when the centre-of-mass motion is removed."""
    massive = sum(1 for i in range(system.getNumParticles()) if system.getParticleMass(i).value_in_unit(u.dalton) > 0)
    dof = 3 * massive - system.getNumConstraints()
    if any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces()):
        dof -= 3
    return int(dof)

