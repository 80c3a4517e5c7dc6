"""Scaling an ML force module by the global parameter lambda_ml, with dU/dlambda.

openmm-torch passes each global parameter of a TorchForce to ``forward`` as a 0-d float64
tensor after the positions (and the box under periodic boundaries). The wrappers here return
``(lambda * E, lambda * F)`` from an inner module that returns ``(E, F)``. The energy handed
back is cut from the model's autograd graph (the forces were already taken from it), so the
``backward`` that openmm-torch runs for ``addEnergyParameterDerivative`` differentiates only
the product with lambda: dU/dlambda = E at the cost of one multiplication.

``torch.no_grad`` is used rather than ``detach``: openmm-torch freezes the module
(``torch.jit.freeze``), and freezing removes ``detach`` calls.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _without_graph(energy: Tensor) -> Tensor:
    with torch.no_grad():
        value = energy.clone()
    return value


class LambdaScaledPeriodic(torch.nn.Module):
    """``forward(positions (N,3) nm, box (3,3) nm, lambda_ml) -> (lambda*E, lambda*F)``."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, positions: Tensor, box: Tensor, lambda_ml: Tensor):
        energy, forces = self.inner(positions, box)
        scale = lambda_ml.to(forces.dtype)
        return lambda_ml * _without_graph(energy).to(lambda_ml.dtype), scale * forces


class LambdaScaled(torch.nn.Module):
    """``forward(positions (N,3) nm, lambda_ml) -> (lambda*E, lambda*F)`` without periodic boundaries."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, positions: Tensor, lambda_ml: Tensor):
        energy, forces = self.inner(positions, None)
        scale = lambda_ml.to(forces.dtype)
        return lambda_ml * _without_graph(energy).to(lambda_ml.dtype), scale * forces


def lambda_scaled(module, periodic: bool) -> torch.jit.ScriptModule:
    """Script the lambda-scaled wrapper of ``module`` (which returns energy and forces)."""
    wrapper = LambdaScaledPeriodic(module) if periodic else LambdaScaled(module)
    return torch.jit.script(wrapper)
