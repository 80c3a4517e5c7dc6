"""TorchScript's graph-executor optimisations off around CPU dynamics (mlmm.torchscript_execution).

The setting may change how fast a TorchForce runs, never what it computes: the mixed System's
energy, forces and dU/dlambda are the same with the optimisations on and off on toluene-water,
for AIMNet2 (real weights) in the mechanical embedding (forces by the model, no autograd) and
the electrostatic one (autograd inside the TorchForce), and for the real ANI-2x architecture
with GENERATED weights (its pretrained file cannot be downloaded here) in the mechanical
embedding (forces by autograd through the model).
"""

from __future__ import annotations

import numpy as np
import openmm
import openmm.unit as u
import pytest
import torch

from generated_models import save_generated_ani2x
from mlmm import forcegroups
from mlmm.embedding import LAMBDA_ML
from mlmm.embedding.mixed import create_mixed_system
from mlmm.torchscript_execution import unoptimized_torchscript

KJ = u.kilojoule_per_mole


def test_off_on_cpu_platforms_only_and_restored():
    assert torch._C._get_graph_executor_optimize()
    for name in ("CPU", "Reference"):
        with unoptimized_torchscript(name):
            assert not torch._C._get_graph_executor_optimize()
        assert torch._C._get_graph_executor_optimize()
    for name in ("CUDA", "OpenCL"):
        with unoptimized_torchscript(name):
            assert torch._C._get_graph_executor_optimize()
    with pytest.raises(RuntimeError, match="inside"):
        with unoptimized_torchscript("CPU"):
            raise RuntimeError("inside")
    assert torch._C._get_graph_executor_optimize()


def _slow_group_state(context):
    state = context.getState(getEnergy=True, getForces=True, getParameterDerivatives=True,
                             groups=forcegroups.group_mask(forcegroups.ML_SLOW))
    return (state.getPotentialEnergy().value_in_unit(KJ), state.getForces(asNumpy=True).value_in_unit(KJ / u.nanometer),
            state.getEnergyParameterDerivatives()[LAMBDA_ML])


@pytest.fixture(scope="module")
def ani_weights(tmp_path_factory):
    return save_generated_ani2x(tmp_path_factory.mktemp("ani") / "ani2x_generated.pt", seed=3)


@pytest.mark.parametrize("model, embedding", [("aimnet2", "mechanical"), ("aimnet2", "electrostatic"),
                                              ("ani2x", "mechanical")])
def test_same_energy_forces_and_derivative_with_optimisations_off(toluene_water, ani_weights, model, embedding):
    options = {"weights": str(ani_weights), "member": 0} if model == "ani2x" else {}
    mixed = create_mixed_system(toluene_water, model, "ligand", embedding, model_options=options)
    context = openmm.Context(mixed.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(toluene_water.positions)
    context.setParameter(LAMBDA_ML, 0.7)
    for _ in range(3):  # two profiling calls, then the optimised plan
        optimised = _slow_group_state(context)
    with unoptimized_torchscript("CPU"):
        for _ in range(3):
            plain = _slow_group_state(context)
    energy, forces, derivative = optimised
    assert abs(derivative) > 1.0 and np.abs(forces).max() > 1.0  # a real ML correction, not zeros
    assert plain[0] == pytest.approx(energy, rel=1e-9, abs=1e-6)
    np.testing.assert_allclose(plain[1], forces, rtol=1e-6, atol=1e-6)
    assert plain[2] == pytest.approx(derivative, rel=1e-9, abs=1e-6)
    assert energy == pytest.approx(0.7 * derivative, rel=1e-9)  # the slow group is lambda * dU/dlambda
