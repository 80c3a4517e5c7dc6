"""The host-copy ML force: ``openmm.PythonForce`` calling the region model with NumPy positions.

This is how openmm-ml 1.8 attaches AIMNet2 (``openmmml/models/aimnet2potential.py``): every
force evaluation OpenMM hands a Python callback a ``State`` holding the region's positions,
the callback copies them into a tensor, calls the model, takes the forces (by autograd there;
here as the TorchForce path takes them, :func:`mlmm.potentials.energy_and_forces`) and copies
them back into a NumPy array. The benchmark's ``pythonforce`` row uses it to measure
what mlmm's TorchForce path (:mod:`mlmm.ml_force`) saves.

:func:`create_host_copy_system` gives the same physics as
:func:`mlmm.embedding.mixed.create_mixed_system` with mechanical embedding: the complete MM
force field in :data:`~mlmm.forcegroups.MM_FAST` and :data:`~mlmm.forcegroups.MM_SLOW`, and in :data:`~mlmm.forcegroups.ML_SLOW`
``lambda_ml * E_ML(region)`` (here the PythonForce) plus the same ``MMRegion`` forces
subtracting ``lambda_ml * E_MM(region)``. Units: nm, kJ/mol, kJ/mol/nm.
"""

from __future__ import annotations

import numpy as np
import openmm
import openmm.unit as u
import torch

from .. import forcegroups
from ..embedding import LAMBDA_ML
from ..errors import InputError
from ..potentials import energy_and_forces, for_energy_only
from ..torch_geometry import central_atom, make_whole

#: name given to the PythonForce in the System
HOST_COPY_FORCE_NAME = "MLRegionHostCopy"
#: embeddings the host-copy path implements, as openmm-ml does
HOST_COPY_EMBEDDINGS = ("mechanical",)


class HostCopyRegionPotential:
    """Callback of an ``openmm.PythonForce``: ``lambda_ml * E_ML`` and its forces for one region.

    The force is restricted to the region (``PythonForce.setParticles``), so the State holds
    the region's positions only (nm). They are copied to a float64 tensor on ``device``,
    made whole about the atom ``anchor`` when ``periodic``, passed to ``region_model``
    (see :mod:`mlmm.potentials`), and the forces ``-dE/dx`` (kJ/mol/nm) come back as a NumPy
    array, scaled like the energy (kJ/mol) by the global parameter ``lambda_ml``. The model
    is moved to ``device`` (in place) so its weights sit where the positions are copied.
    """

    def __init__(self, region_model, periodic: bool, anchor: int = 0, device: str = "cpu"):
        self.device = torch.device(device)
        self.region_model = for_energy_only(region_model).to(self.device)
        self.periodic = bool(periodic)
        self.anchor = int(anchor)

    def __call__(self, state: openmm.State):
        positions = torch.tensor(state.getPositions(asNumpy=True).value_in_unit(u.nanometer),
                                 dtype=torch.float64, device=self.device)
        if self.periodic:
            box = torch.tensor(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer),
                               dtype=torch.float64, device=self.device)
            positions = make_whole(positions, box, self.anchor)
        # making the region whole moves atoms by box vectors: the forces on the whole region are theirs
        energy, region_forces = energy_and_forces(self.region_model, positions)
        scale = state.getParameters()[LAMBDA_ML]
        forces = (scale * region_forces).to(torch.float64).cpu().numpy()
        return scale * float(energy), forces


def create_host_copy_force(region_model, region: np.ndarray, periodic: bool, anchor: int = 0,
                           lambda_value: float = 1.0, device: str = "cpu") -> openmm.PythonForce:
    """A PythonForce in ``ML_SLOW`` applying ``region_model`` to the atoms ``region``."""
    force = openmm.PythonForce(HostCopyRegionPotential(region_model, periodic, anchor, device),
                               {LAMBDA_ML: float(lambda_value)})
    force.setParticles([int(i) for i in region])
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    force.setForceGroup(forcegroups.ML_SLOW)
    force.setName(HOST_COPY_FORCE_NAME)
    return force


def create_host_copy_system(mixed, device: str = "cpu") -> openmm.System:
    """The System of ``mixed`` (a mechanical MixedSystem) with its TorchForce replaced by a PythonForce.

    ``mixed`` must be fresh: its System is changed in place (the TorchForce removed) and
    returned. Raises :class:`InputError` for an electrostatic embedding or link atoms, which
    the host-copy path does not implement.
    """
    from ..embedding.mixed import ML_FORCE_NAME

    if mixed.embedding not in HOST_COPY_EMBEDDINGS:
        raise InputError(f"the host-copy (PythonForce) path implements mechanical embedding only, not "
                         f"{mixed.embedding!r}; benchmark it with embedding='mechanical'.")
    if getattr(mixed, "link_atoms", None) is not None:
        raise InputError("the host-copy (PythonForce) path has no link atoms; benchmark it on a region of whole "
                         "molecules (e.g. the ligand).")
    system = mixed.system
    names = [force.getName() for force in system.getForces()]
    if names.count(ML_FORCE_NAME) != 1:
        raise InputError(f"the mixed System holds {names.count(ML_FORCE_NAME)} forces named {ML_FORCE_NAME!r}; "
                         "expected exactly one (create it with mlmm.embedding.create_mixed_system).")
    lambda_value = _global_parameter_default(system, LAMBDA_ML)
    system.removeForce(names.index(ML_FORCE_NAME))
    anchor = central_atom(torch.as_tensor(mixed.molecular_system.positions[mixed.region]))  # as the TorchForce
    system.addForce(create_host_copy_force(mixed.region_model, mixed.region, system.usesPeriodicBoundaryConditions(),
                                           anchor, lambda_value, device))
    return system


def _global_parameter_default(system: openmm.System, name: str) -> float:
    for force in system.getForces():
        for index in range(getattr(force, "getNumGlobalParameters", lambda: 0)()):
            if force.getGlobalParameterName(index) == name:
                return float(force.getGlobalParameterDefaultValue(index))
    return 1.0
