"""The MM energy of a region alone, as OpenMM forces: what the ML potential replaces.

Mechanical (subtractive) embedding is
``V = V_MM(environment + region) + V_ML(region) - V_MM(region)`` (Wang et al., Appl. Phys. Rev.
2025, Eq. 30). Here ``V_MM(region)`` is the energy the MM force field gives the region *alone
in the same periodic box*: its bonded terms (those whose atoms all lie in the region) and its
nonbonded energy computed with the same method (PME, cutoff, switching, exceptions), which
includes the region's interactions with its own periodic images. Subtracting exactly this
quantity removes every intra-region MM interaction, images included, and leaves the MM
region-environment interactions untouched.

:func:`region_mm_forces` builds new force objects holding only those terms; the originals in
the System are not modified. Every other particle keeps its place with zero charge and zero
Lennard-Jones well depth, so the forces can be collective variables of a ``CustomCVForce``
over the full system. The homogeneous long-range dispersion correction is a property of the
whole box and is not part of the region's energy (it is switched off in the copy).
"""

from __future__ import annotations

import numpy as np
import openmm

from ..errors import InputError

# Bonded force types whose terms can be restricted to the region, with their CV names.
_BONDED_CV_NAMES = {
    openmm.HarmonicBondForce: "mm_bonds",
    openmm.HarmonicAngleForce: "mm_angles",
    openmm.PeriodicTorsionForce: "mm_torsions",
    openmm.RBTorsionForce: "mm_rb_torsions",
}
# Forces that carry no interaction between region atoms (external potentials, barostats).
_IGNORED_TYPES = (openmm.CMMotionRemover, openmm.MonteCarloBarostat, openmm.MonteCarloAnisotropicBarostat,
                  openmm.MonteCarloMembraneBarostat, openmm.MonteCarloFlexibleBarostat,
                  openmm.CustomExternalForce)


def region_mm_forces(system: openmm.System, region: np.ndarray) -> dict[str, openmm.Force]:
    """Forces whose summed energy is the MM energy of ``region`` alone in the same box.

    Returns a dict from a collective-variable name (``mm_bonds``, ``mm_angles``,
    ``mm_torsions``, ``mm_rb_torsions``, ``mm_nonbonded``) to a new force; kinds with no term
    inside the region are omitted. Raises :class:`InputError` for a force type whose
    intra-region energy mlmm cannot separate (for example a ``CustomNonbondedForce``).
    """
    inside = np.zeros(system.getNumParticles(), dtype=bool)
    inside[np.asarray(region)] = True
    forces: dict[str, openmm.Force] = {}
    for force in system.getForces():
        if isinstance(force, _IGNORED_TYPES):
            continue
        if type(force) in _BONDED_CV_NAMES:
            copy = _restrict_bonded(force, inside)
            if copy is not None:
                forces[_BONDED_CV_NAMES[type(force)]] = copy
        elif isinstance(force, openmm.NonbondedForce):
            forces["mm_nonbonded"] = _restrict_nonbonded(force, inside)
        elif isinstance(force, openmm.CMAPTorsionForce):
            if any(_cmap_atoms(force, i) <= set(np.flatnonzero(inside)) for i in range(force.getNumTorsions())):
                raise InputError(
                    "the ML region contains complete CMAP torsions, which mlmm cannot subtract yet; "
                    "choose a region that does not include whole backbone CMAP terms."
                )
        else:
            raise InputError(
                f"the MM System holds a {force.__class__.__name__}, whose energy inside the ML region mlmm cannot "
                "separate; build the system with standard OpenMM forces (mlmm build does)."
            )
    return forces


def _restrict_bonded(force: openmm.Force, inside: np.ndarray) -> openmm.Force | None:
    """A new force of the same type with only the terms whose atoms all lie in the region."""
    copy = type(force)()
    copy.setUsesPeriodicBoundaryConditions(force.usesPeriodicBoundaryConditions())
    if isinstance(force, openmm.HarmonicBondForce):
        terms, get, add = force.getNumBonds(), force.getBondParameters, copy.addBond
        n_atoms = 2
    elif isinstance(force, openmm.HarmonicAngleForce):
        terms, get, add = force.getNumAngles(), force.getAngleParameters, copy.addAngle
        n_atoms = 3
    else:
        terms, get, add = force.getNumTorsions(), force.getTorsionParameters, copy.addTorsion
        n_atoms = 4
    for index in range(terms):
        parameters = get(index)
        atoms = parameters[:n_atoms]
        if all(inside[a] for a in atoms):
            add(*parameters)
    return copy if _num_terms(copy) else None


def _num_terms(force: openmm.Force) -> int:
    for getter in ("getNumBonds", "getNumAngles", "getNumTorsions"):
        if hasattr(force, getter):
            return getattr(force, getter)()
    return 0


def _cmap_atoms(force: openmm.CMAPTorsionForce, index: int) -> set[int]:
    return set(force.getTorsionParameters(index)[1:9])


def _restrict_nonbonded(force: openmm.NonbondedForce, inside: np.ndarray) -> openmm.NonbondedForce:
    """A NonbondedForce with the region's charges and LJ only, same method and settings."""
    copy = openmm.NonbondedForce()
    copy.setNonbondedMethod(force.getNonbondedMethod())
    copy.setCutoffDistance(force.getCutoffDistance())
    copy.setUseSwitchingFunction(force.getUseSwitchingFunction())
    copy.setSwitchingDistance(force.getSwitchingDistance())
    copy.setEwaldErrorTolerance(force.getEwaldErrorTolerance())
    copy.setReactionFieldDielectric(force.getReactionFieldDielectric())
    copy.setPMEParameters(*force.getPMEParameters())
    copy.setLJPMEParameters(*force.getLJPMEParameters())
    copy.setExceptionsUsePeriodicBoundaryConditions(force.getExceptionsUsePeriodicBoundaryConditions())
    copy.setUseDispersionCorrection(False)
    if force.getNumGlobalParameters() or force.getNumParticleParameterOffsets():
        raise InputError(
            "the MM NonbondedForce already uses global parameter offsets (an alchemical system?); "
            "create the ML/MM system from the plain MM system."
        )
    zero = (0.0, 1.0, 0.0)
    for index in range(force.getNumParticles()):
        copy.addParticle(*(force.getParticleParameters(index) if inside[index] else zero))
    for index in range(force.getNumExceptions()):
        i, j, charge_product, sigma, epsilon = force.getExceptionParameters(index)
        if inside[i] and inside[j]:
            copy.addException(i, j, charge_product, sigma, epsilon)
    return copy
