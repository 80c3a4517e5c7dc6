"""The force groups mlmm uses, named in this one place.

Difference splitting for multiple time steps (r-RESPA) evaluates the stiff and cheap terms
every inner step and the smooth or expensive ones once per outer step of k inner steps:

- ``MM_FAST``: the MM force field except its reciprocal space, region included (bonds,
  angles, torsions, Lennard-Jones, the direct-space Coulomb sum): every inner step;
- ``ML_SLOW``: the ML correction, lambda * (ML(region) + coupling - MM(region)): every outer step;
- ``MM_SLOW``: the reciprocal space of the MM Coulomb sum (the PME mesh, or the Ewald sum),
  the part of the MM force field that varies least over the outer step: every outer step, as
  in GROMACS's multiple time stepping (``mts-level2-forces = longrange-nonbonded``) and the
  common use OpenMM's ``MTSIntegrator`` documents. On the 734 atoms of toluene-water it is
  0.65 of 1.6 ms per MM evaluation (CPU platform, 2 threads).

Nothing else in mlmm hard-codes a group number.
"""

from __future__ import annotations

import openmm

#: MM force field without its reciprocal space, region included: every inner step
MM_FAST = 0
#: ML correction lambda * (ML(region) + coupling - MM(region)): every outer step
ML_SLOW = 1
#: reciprocal space of the MM nonbonded force (PME mesh, Ewald sum): every outer step
MM_SLOW = 2
#: the complete MM force field
MM_GROUPS = (MM_FAST, MM_SLOW)
#: what multiple time stepping applies once per outer step
SLOW_GROUPS = (ML_SLOW, MM_SLOW)


def group_mask(*groups: int) -> int:
    """Bit mask for ``Context.getState(groups=...)`` selecting the given force groups."""
    mask = 0
    for group in groups:
        mask |= 1 << group
    return mask


def groups_in(system: openmm.System) -> set[int]:
    """The force groups that hold terms of ``system``: each force's, and a NonbondedForce's reciprocal space's."""
    groups = set()
    for force in system.getForces():
        groups.add(force.getForceGroup())
        if isinstance(force, openmm.NonbondedForce) and force.getReciprocalSpaceForceGroup() >= 0:
            groups.add(force.getReciprocalSpaceForceGroup())
    return groups
