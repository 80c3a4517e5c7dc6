"""An ML region model as an openmm-torch ``TorchForce`` whose work stays on the device.

:class:`MLRegionForce` is the full-system TorchScript module that OpenMM calls every step::

    forward(positions: (N, 3) nm, box: (3, 3) nm, optional) -> (energy kJ/mol, forces (N, 3) kJ/mol/nm)

It picks the ML region out of all N positions with a registered index buffer, makes the
region whole under periodic boundaries (minimum image about one anchor atom,
:func:`mlmm.torch_geometry.make_whole`), evaluates the region model (see
:mod:`mlmm.potentials`) and returns the forces itself, computed once by autograd inside
``forward``; the TorchForce therefore runs with ``setOutputsForces(True)`` and OpenMM skips
its own backward pass. A model in energy-only mode (:func:`mlmm.potentials.for_energy_only`)
returns its own forces and runs without autograd. Atoms outside the region get zero force.
The energy and forces come back in the dtype of the positions OpenMM passes (float64 on the
Reference platform and in double precision, float32 otherwise); the region model decides its
own arithmetic (AIMNet2, ANI and MACE-OFF compute in float32).

Nothing in ``forward`` synchronises with the host: no ``.item()``, ``.cpu()``, NumPy or
Python loop over atoms, and every tensor follows the device of ``positions``, so the same
module runs on the Reference, CPU and CUDA platforms.

Scaling by lambda is the embedding's job (:mod:`mlmm.embedding.scaling` wraps this module
and passes lambda as a TorchForce global parameter). The module also works as a collective
variable of a ``CustomCVForce``, but with OpenMM 8.6 and the openmmtorch 1.5 wheel such a
``CustomCVForce`` crashes when a Context is created: it clones its variables through
OpenMM's serializer, whose node layout changed in OpenMM 8.6 after the wheel was built
(see :mod:`mlmm.serialization`). With OpenMM 8.5.2 it works.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Optional

import numpy as np
import openmm
import torch
from torch import Tensor

from . import forcegroups
from .errors import InputError
from .potentials import for_energy_only, returns_forces
from .torch_geometry import central_atom, make_whole


class MLRegionForce(torch.nn.Module):
    """Energy and forces of an ML region model, evaluated on the region's atoms of a full system.

    Parameters
    ----------
    region_model:
        TorchScript (or scriptable) region model: ``forward(positions (n, 3) nm) ->
        Dict[str, Tensor]`` with a differentiable ``"energy"`` in kJ/mol. Only the energy is
        used, so the model is told so (:func:`mlmm.potentials.for_energy_only`).
    indices:
        the n atom indices (0-based, unique) of the region in the full system, in the order
        the region model expects its atoms.
    n_atoms:
        number of particles N in the full system.
    periodic:
        whether OpenMM passes a periodic box; then the region is made whole before the model
        sees it.
    anchor:
        position within ``indices`` of the atom the region is made whole around; pick an atom
        near the region's centre for large regions.
    """

    def __init__(self, region_model, indices: Sequence[int], n_atoms: int, periodic: bool, anchor: int = 0):
        super().__init__()
        self.model = for_energy_only(region_model)
        self.model_returns_forces = returns_forces(self.model)
        self.register_buffer("indices", torch.as_tensor(np.asarray(indices), dtype=torch.long))
        self.n_atoms = int(n_atoms)
        self.periodic = bool(periodic)
        self.anchor = int(anchor)

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        # Grad is off except around the model's own autograd pass, from the first use of the
        # positions (which openmm-torch passes with requires_grad) to the last: inside a
        # TorchForce any tensor operation with grad enabled, even reading their shape, made
        # the call of the energy-only AIMNet2 about 0.5 ms slower (toluene, 734 particles).
        # Not detach(): openmm-torch freezes the module and torch.jit.freeze deletes aten::detach.
        grad_was_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(False)
        assert positions.shape[0] == self.n_atoms, "MLRegionForce got positions of a different number of atoms"
        region = positions.index_select(0, self.indices)
        if not self.model_returns_forces:
            torch.set_grad_enabled(True)
            region.requires_grad_(True)
        whole = region
        if self.periodic:
            assert box is not None, "MLRegionForce was built for periodic boundaries but got no box"
            whole = make_whole(region, box, self.anchor)
        output = self.model(whole)
        if self.model_returns_forces:
            region_forces = output["forces"]
        else:
            gradient = torch.autograd.grad([output["energy"]], [region])[0]
            assert gradient is not None
            region_forces = -gradient
            torch.set_grad_enabled(False)
        forces = torch.zeros_like(positions).index_copy(0, self.indices, region_forces.to(positions.dtype))
        energy = output["energy"].to(positions.dtype).clone()
        torch.set_grad_enabled(grad_was_enabled)
        return energy, forces


def _validated_indices(indices, n_atoms: int) -> np.ndarray:
    try:
        array = np.asarray(indices, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError(f"ML region indices {indices!r} are not a list of integers; give 0-based atom indices.") from None
    if array.size == 0:
        raise InputError("the ML region is empty; give the 0-based indices of at least one atom.")
    bad = array[(array < 0) | (array >= n_atoms)]
    if bad.size:
        raise InputError(
            f"ML region indices {bad[:5].tolist()} are outside 0..{n_atoms - 1} (the system has {n_atoms} "
            "particles); use 0-based atom indices."
        )
    values, counts = np.unique(array, return_counts=True)
    if (counts > 1).any():
        raise InputError(f"ML region indices {values[counts > 1][:5].tolist()} appear more than once; list each atom once.")
    return array


def create_ml_module(
    region_model, indices: Sequence[int], n_atoms: int, periodic: bool, anchor: int = 0
) -> torch.jit.ScriptModule:
    """Script an :class:`MLRegionForce` for ``region_model`` on the atoms ``indices`` of an N-atom system.

    Raises :class:`InputError` for empty, repeated or out-of-range indices or anchor.
    """
    array = _validated_indices(indices, int(n_atoms))
    if not 0 <= int(anchor) < array.size:
        raise InputError(f"anchor {anchor} is not a position in the ML region (0..{array.size - 1}).")
    return torch.jit.script(MLRegionForce(region_model, array, int(n_atoms), periodic, int(anchor)))


def create_torch_force(
    module,
    periodic: bool,
    force_group: int = forcegroups.ML_SLOW,
    properties: Optional[Mapping[str, str]] = None,
):
    """Wrap a full-system module (or the path of a saved one) in an ``openmmtorch.TorchForce``.

    The force outputs its own forces (``setOutputsForces(True)``), receives the box when
    ``periodic`` and sits in ``force_group`` (default :data:`mlmm.forcegroups.ML_SLOW`).
    ``properties`` are passed to openmm-torch as strings, for example
    ``{"useCUDAGraphs": "true"}`` on the CUDA platform.
    """
    import openmmtorch

    if not isinstance(module, torch.jit.ScriptModule):
        module = torch.jit.load(str(module), map_location="cpu")
    force = openmmtorch.TorchForce(module, {str(k): str(v) for k, v in (properties or {}).items()})
    force.setOutputsForces(True)
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    force.setForceGroup(int(force_group))
    return force


def add_ml_potential(
    system: openmm.System,
    model,
    indices: Sequence[int],
    atomic_numbers: Sequence[int],
    total_charge: int = 0,
    force_group: int = forcegroups.ML_SLOW,
    properties: Optional[Mapping[str, str]] = None,
    positions=None,
    periodic: Optional[bool] = None,
    **options,
) -> int:
    """Add the ML energy of the atoms ``indices`` to ``system`` as a TorchForce; return its index.

    ``model`` is a plugin name (see ``mlmm models``) or a :class:`~mlmm.potentials.PotentialPlugin`;
    ``atomic_numbers`` and ``total_charge`` (e) describe the region in the order of ``indices``;
    ``options`` go to the plugin (for example ``functional="b973c"``, ``ensemble=True``,
    ``path=...``). ``positions`` (all N atoms, nm), when given, let the plugin check the
    model on the real geometry and place the periodic anchor at the atom nearest the
    region's centre. ``periodic`` defaults to ``system.usesPeriodicBoundaryConditions()``
    (which OpenMM derives from the System's forces). This adds the ML energy only, unscaled;
    removing the region's MM terms and scaling by lambda is the embedding's job
    (:mod:`mlmm.embedding`).
    """
    from .potentials import PotentialPlugin, load_plugin

    plugin = model if isinstance(model, PotentialPlugin) else load_plugin(str(model))
    n_atoms = system.getNumParticles()
    array = _validated_indices(indices, n_atoms)
    numbers = [int(z) for z in atomic_numbers]
    if len(numbers) != array.size:
        raise InputError(
            f"{len(numbers)} atomic numbers given for an ML region of {array.size} atoms; give one per region atom."
        )
    periodic = system.usesPeriodicBoundaryConditions() if periodic is None else bool(periodic)
    anchor = 0
    if positions is not None:
        from openmm import unit

        from .units import array_in

        all_positions = array_in(positions, unit.nanometer, "positions")
        if all_positions.shape != (n_atoms, 3):
            raise InputError(f"positions have shape {all_positions.shape}; expected ({n_atoms}, 3) in nm.")
        region = torch.as_tensor(all_positions[array])
        if periodic:
            box = torch.as_tensor(
                np.array([v.value_in_unit(unit.nanometer) for v in system.getDefaultPeriodicBoxVectors()])
            )
            region = make_whole(region, box)
        anchor = central_atom(region)
        options["positions"] = region.numpy()
    plugin.check_region(numbers, int(total_charge))
    region_model = plugin.create_model(numbers, int(total_charge), **options)
    module = create_ml_module(region_model, array, n_atoms, periodic, anchor)
    return system.addForce(create_torch_force(module, periodic, force_group, properties))
