"""The MM energy of a region alone, as OpenMM forces: what the ML potential replaces.

Mechanical (subtractive) embedding is
``V = V_MM(environment + region) + V_ML(region) - V_MM(region)`` (Wang et al., Appl. Phys. Rev.
2025, Eq. 30). ``V_MM(region)`` is the MM energy of the region's atoms alone: its bonded terms
(those whose atoms all lie in the region) and the nonbonded energy of its atom pairs. Two
ways to compute the nonbonded part (``nonbonded=``):

- ``"pairs"`` (default): a ``CustomBondForce`` over the region's atom pairs, minimum image.
  Normal pairs: Coulomb ``k q_i q_j / r`` (with PME or Ewald the real-space and reciprocal
  parts of one pair add up to exactly this; with a reaction-field cutoff method the
  reaction-field form within the cutoff), Lennard-Jones with the same cutoff and switch;
  1-4 exceptions as ``NonbondedForce`` computes them (plain Coulomb and LJ, no cutoff);
  excluded pairs nothing. Under PME this leaves out the region's interaction with its own
  periodic images, which therefore stays at the MM level (it is the MM finite-size term of
  the region; for a neutral ligand in a 2 nm box it is ~1e-3 kJ/mol). This is the same
  approximation OpenMM-ML's mixed systems make by excluding all pairs inside the ML region.
  Cost: N(N-1)/2 pairs, independent of the box.
- ``"box"``: a ``NonbondedForce`` over *all* particles with only the region's charges and LJ
  (zeros elsewhere), same method and settings, so the region's PME self-images are removed
  too. Exact, but every evaluation pays a neighbour list and a reciprocal-space sum over
  the whole box (133 of 157 CPU ms of the slow group on the 31,800-atom T4L system).

:func:`region_mm_forces` builds new force objects holding only those terms; the originals in
the System are not modified. The bonded terms become ``CustomBondForce``, ``CustomAngleForce``
and ``CustomTorsionForce`` objects with OpenMM's functional forms, so that every term can
carry a factor in its expression: with ``lambda_parameter`` the forces compute
``-lambda * E_MM(region)`` directly, declare the global parameter and its energy derivative,
and sit in the System beside the ML force without a ``CustomCVForce`` (whose inner Context
copies every particle's positions on each evaluation). The ``"box"`` NonbondedForce, whose
energy is not linear in any of its parameters, is scaled as the variable of a
``CustomCVForce``. The forces span all particles. The homogeneous long-range dispersion
correction is a property of the whole box and is not part of the region's energy.
"""

from __future__ import annotations

import numpy as np
import openmm
import openmm.unit as u

from ..errors import InputError
from ..units import COULOMB_CONSTANT

#: Ways to compute the region's nonbonded energy (see the module docstring).
NONBONDED_METHODS = ("pairs", "box")
_KJ = u.kilojoule_per_mole

# Bonded force types whose terms can be restricted to the region: name, kind of term (OpenMM's
# method names: getNumBonds, addPerBondParameter, ...), OpenMM's energy expression (kJ/mol) and
# its per-term parameters in the order the force's getter returns them after the atoms.
_BONDED = {
    openmm.HarmonicBondForce: ("mm_bonds", "Bond", "0.5*k*(r-r0)^2", ("r0", "k")),
    openmm.HarmonicAngleForce: ("mm_angles", "Angle", "0.5*k*(theta-theta0)^2", ("theta0", "k")),
    openmm.PeriodicTorsionForce: ("mm_torsions", "Torsion", "k*(1+cos(n*theta-phase))", ("n", "phase", "k")),
    # Ryckaert-Bellemans: psi = theta - 180 degrees, so cos(psi) = -cos(theta)
    openmm.RBTorsionForce: ("mm_rb_torsions", "Torsion", "c0+c1*c+c2*c^2+c3*c^3+c4*c^4+c5*c^5; c=-cos(theta)",
                            ("c0", "c1", "c2", "c3", "c4", "c5")),
}
_CUSTOM_TYPES = {"Bond": openmm.CustomBondForce, "Angle": openmm.CustomAngleForce, "Torsion": openmm.CustomTorsionForce}
_ATOMS_PER_TERM = {"Bond": 2, "Angle": 3, "Torsion": 4}
# Forces that carry no interaction between region atoms (external potentials, barostats).
_IGNORED_TYPES = (openmm.CMMotionRemover, openmm.MonteCarloBarostat, openmm.MonteCarloAnisotropicBarostat,
                  openmm.MonteCarloMembraneBarostat, openmm.MonteCarloFlexibleBarostat,
                  openmm.CustomExternalForce)


def region_mm_forces(system: openmm.System, region: np.ndarray, nonbonded: str = "pairs",
                     lambda_parameter: str | None = None, lambda_value: float = 1.0) -> dict[str, openmm.Force]:
    """Forces whose summed energy is the MM energy of ``region`` alone (kJ/mol).

    Returns a dict from a name (``mm_bonds``, ``mm_angles``, ``mm_torsions``,
    ``mm_rb_torsions``, ``mm_nonbonded``) to a new force; kinds with no term inside the region
    are omitted. ``nonbonded`` is ``"pairs"`` or ``"box"`` (module docstring). With
    ``lambda_parameter`` each force's energy is ``-lambda * E`` instead of ``E``, and each
    declares that global parameter (default ``lambda_value``) and its energy derivative, so
    their derivatives sum to ``-E_MM(region)``. Raises :class:`InputError` for a force type
    whose intra-region energy mlmm cannot separate (for example a ``CustomNonbondedForce``).
    """
    if nonbonded not in NONBONDED_METHODS:
        raise InputError(f"unknown mm_region {nonbonded!r}; choose one of {', '.join(NONBONDED_METHODS)}.")
    inside = np.zeros(system.getNumParticles(), dtype=bool)
    inside[np.asarray(region)] = True
    factor = f"-{lambda_parameter}*" if lambda_parameter else ""
    forces: dict[str, openmm.Force] = {}
    for force in system.getForces():
        if isinstance(force, _IGNORED_TYPES):
            continue
        if type(force) in _BONDED:
            copy = _restrict_bonded(force, inside, factor)
            if copy is not None:
                forces[_BONDED[type(force)][0]] = copy
        elif isinstance(force, openmm.NonbondedForce):
            _check_plain_nonbonded(force)
            if nonbonded == "pairs":
                copy = _region_pairs(force, inside, factor)
            else:
                copy = _restrict_nonbonded(force, inside)
                if lambda_parameter:
                    copy = _scaled_variable(copy, "mm_nonbonded", factor)
            if copy is not None:
                forces["mm_nonbonded"] = copy
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
    if lambda_parameter:
        for force in forces.values():
            force.addGlobalParameter(lambda_parameter, float(lambda_value))
            force.addEnergyParameterDerivative(lambda_parameter)
    return forces


def _with_factor(factor: str, expression: str) -> str:
    """``factor*(energy)`` for an expression whose definitions follow the first ``;``."""
    if not factor:
        return expression
    energy, separator, definitions = expression.partition(";")
    return f"{factor}({energy}){separator}{definitions}"


def _restrict_bonded(force: openmm.Force, inside: np.ndarray, factor: str) -> openmm.Force | None:
    """A Custom force with the terms of ``force`` whose atoms all lie in the region, times ``factor``."""
    _, kind, expression, names = _BONDED[type(force)]
    copy = _CUSTOM_TYPES[kind](_with_factor(factor, expression))
    for name in names:
        getattr(copy, f"addPer{kind}Parameter")(name)
    copy.setUsesPeriodicBoundaryConditions(force.usesPeriodicBoundaryConditions())
    n_atoms = _ATOMS_PER_TERM[kind]
    for index in range(getattr(force, f"getNum{kind}s")()):
        parameters = getattr(force, f"get{kind}Parameters")(index)
        atoms = parameters[:n_atoms]
        if all(inside[a] for a in atoms):
            getattr(copy, f"add{kind}")(*atoms, [_md_value(p) for p in parameters[n_atoms:]])
    return copy if getattr(copy, f"getNum{kind}s")() else None


def _md_value(value) -> float:
    """A parameter in OpenMM's default units (nm, kJ/mol, radians) as a plain number."""
    return float(value.value_in_unit_system(u.md_unit_system) if u.is_quantity(value) else value)


def _scaled_variable(force: openmm.Force, name: str, factor: str) -> openmm.CustomCVForce:
    """``factor * force`` as a CustomCVForce with ``force`` as its one variable."""
    scaled = openmm.CustomCVForce(f"{factor}{name}")
    scaled.addCollectiveVariable(name, force)
    return scaled


def _cmap_atoms(force: openmm.CMAPTorsionForce, index: int) -> set[int]:
    return set(force.getTorsionParameters(index)[1:9])


def _check_plain_nonbonded(force: openmm.NonbondedForce) -> None:
    if force.getNumGlobalParameters() or force.getNumParticleParameterOffsets():
        raise InputError(
            "the MM NonbondedForce already uses global parameter offsets (an alchemical system?); "
            "create the ML/MM system from the plain MM system."
        )


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
    zero = (0.0, 1.0, 0.0)
    for index in range(force.getNumParticles()):
        copy.addParticle(*(force.getParticleParameters(index) if inside[index] else zero))
    for index in range(force.getNumExceptions()):
        i, j, charge_product, sigma, epsilon = force.getExceptionParameters(index)
        if inside[i] and inside[j]:
            copy.addException(i, j, charge_product, sigma, epsilon)
    return copy


def _region_pairs(force: openmm.NonbondedForce, inside: np.ndarray, factor: str) -> openmm.CustomBondForce | None:
    """The region's intra-region nonbonded energy times ``factor``, as a CustomBondForce over its atom pairs.

    None when the region has no pairs with an interaction. Per-pair parameters: ``qq`` (e^2),
    ``sig`` (nm), ``eps`` (kJ/mol) and ``normal`` (1 for a normal pair, which gets the cutoff,
    switch and reaction field; 0 for a 1-4 exception, which NonbondedForce computes as plain
    Coulomb and LJ without cutoff).
    """
    method = force.getNonbondedMethod()
    if method == openmm.NonbondedForce.LJPME:
        raise InputError("the region's MM pairs cannot be computed for LJPME; use mm_region='box' for this system.")
    coulomb = f"{COULOMB_CONSTANT}*qq/r"
    lj = "4*eps*((sig/r)^12-(sig/r)^6)"
    definitions = ""
    if method != openmm.NonbondedForce.NoCutoff:
        rc = force.getCutoffDistance().value_in_unit(u.nanometer)
        inside_cutoff = f"(1-normal*step(r-{rc}))"
        if method in (openmm.NonbondedForce.CutoffNonPeriodic, openmm.NonbondedForce.CutoffPeriodic):
            dielectric = force.getReactionFieldDielectric()
            k_rf = (dielectric - 1) / ((2 * dielectric + 1) * rc**3)
            c_rf = 3 * dielectric / ((2 * dielectric + 1) * rc)
            coulomb = f"{inside_cutoff}*{COULOMB_CONSTANT}*qq*(1/r+normal*({k_rf!r}*r^2-{c_rf!r}))"
        lj = f"{inside_cutoff}*{lj}"
        if force.getUseSwitchingFunction():
            rs = force.getSwitchingDistance().value_in_unit(u.nanometer)
            lj = f"(1-normal*(10*x^3-15*x^4+6*x^5))*{lj}"
            definitions = f"; x=min(1,max(0,(r-{rs})/({rc}-{rs})))"
    pairs = openmm.CustomBondForce(_with_factor(factor, f"{coulomb} + {lj}{definitions}"))
    for name in ("qq", "sig", "eps", "normal"):
        pairs.addPerBondParameter(name)
    pairs.setUsesPeriodicBoundaryConditions(force.usesPeriodicBoundaryConditions())
    exceptions = {}
    for index in range(force.getNumExceptions()):
        i, j, charge_product, sigma, epsilon = force.getExceptionParameters(index)
        if inside[i] and inside[j]:
            exceptions[(min(i, j), max(i, j))] = (charge_product.value_in_unit(u.elementary_charge**2),
                                                  sigma.value_in_unit(u.nanometer), epsilon.value_in_unit(_KJ))
    atoms = np.flatnonzero(inside).tolist()
    parameters = {i: [p._value for p in force.getParticleParameters(i)] for i in atoms}
    for a, i in enumerate(atoms):
        for j in atoms[a + 1:]:
            if (i, j) in exceptions:
                charge_product, sigma, epsilon = exceptions[(i, j)]
                if charge_product != 0.0 or epsilon != 0.0:
                    pairs.addBond(i, j, [charge_product, sigma, epsilon, 0.0])
            else:
                (qi, si, ei), (qj, sj, ej) = parameters[i], parameters[j]
                pairs.addBond(i, j, [qi * qj, 0.5 * (si + sj), float(np.sqrt(ei * ej)), 1.0])
    return pairs if pairs.getNumBonds() else None
