"""Scaling an ML force module by the global parameter lambda_ml, with dU/dlambda.

openmm-torch passes each global parameter of a TorchForce to ``forward`` as a 0-d float64
tensor after the positions (and the box under periodic boundaries). The wrappers here return
``(lambda * E, lambda * F)`` from an inner module that returns ``(E, F)``. The energy handed
back is cut from the model's autograd graph (the forces were already taken from it), so the
``backward`` that openmm-torch runs for ``addEnergyParameterDerivative`` differentiates only
the product with lambda: dU/dlambda = E at the cost of one multiplication. The forces are
scaled without autograd: OpenMM reads only their values, and recording the product (which
keeps all N x 3 forces for a backward pass nobody runs) cost 0.03-0.07 ms per evaluation at
31,800 particles (a TorchForce of a zero-force model, interleaved).

``torch.no_grad`` is used rather than ``detach``: openmm-torch freezes the module
(``torch.jit.freeze``), and freezing removes ``detach`` calls.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _scaled(energy: Tensor, forces: Tensor, lambda_ml: Tensor) -> tuple[Tensor, Tensor]:
    """``(lambda * E, lambda * F)``, with autograd recording only the product of lambda and E's value."""
    with torch.no_grad():
        value = energy.clone()
        scaled_forces = forces * lambda_ml.to(forces.dtype)
    return lambda_ml * value.to(lambda_ml.dtype), scaled_forces


class LambdaScaledPeriodic(torch.nn.Module):
    """``forward(positions (N,3) nm, box (3,3) nm, lambda_ml) -> (lambda*E, lambda*F)``."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, positions: Tensor, box: Tensor, lambda_ml: Tensor):
        energy, forces = self.inner(positions, box)
        return _scaled(energy, forces, lambda_ml)


class LambdaScaled(torch.nn.Module):
    """``forward(positions (N,3) nm, lambda_ml) -> (lambda*E, lambda*F)`` without periodic boundaries."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, positions: Tensor, lambda_ml: Tensor):
        energy, forces = self.inner(positions, None)
        return _scaled(energy, forces, lambda_ml)


def lambda_scaled(module, periodic: bool) -> torch.jit.ScriptModule:
    """Script the lambda-scaled wrapper of ``module`` (which returns energy and forces)."""
    wrapper = LambdaScaledPeriodic(module) if periodic else LambdaScaled(module)
    return torch.jit.script(wrapper)
