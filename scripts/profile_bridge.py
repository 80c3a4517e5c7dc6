"""What a TorchForce costs by itself, apart from its model, as the system grows.

    python scripts/profile_bridge.py [--atoms 734 31800] [--evaluations 30] [--repeats 7] [--threads 2]

For each particle count N this builds a periodic System of N free particles three ways: with
no force, with a TorchForce whose module returns a zero energy and zero forces for all N
atoms (``setOutputsForces(True)``, as mlmm's ML force does), and the same module called from
Python on an (N, 3) float64 tensor, as openmm-torch's kernel passes the positions. It prints
the median wall ms per energy evaluation (``getState(getEnergy=True)``) of each, timed in
interleaved rounds after one warm-up round on the CPU platform with one PyTorch thread. The
difference between the TorchForce and the empty System, less the module's own time, is what
OpenMM and openmm-torch spend around the module call; it grows with N, not with the ML region.
"""

from __future__ import annotations

import argparse
import time

import mlmm  # noqa: F401  (torch before openmm)
import numpy as np
import openmm
import openmmtorch
import torch

from mlmm.bench import timing

BOX_NM = 7.0


class ZeroForces(torch.nn.Module):
    """Zero energy (kJ/mol) and zero forces for every particle: a TorchForce with no model."""

    def forward(self, positions: torch.Tensor, box: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return positions[0, 0] * 0.0, torch.zeros_like(positions)


def free_particles_context(n_atoms: int, module, threads: int) -> openmm.Context:
    """A Context of ``n_atoms`` carbon-mass particles in a cubic box, with ``module`` as a TorchForce if given."""
    system = openmm.System()
    for _ in range(n_atoms):
        system.addParticle(12.0)
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(BOX_NM, 0, 0), openmm.Vec3(0, BOX_NM, 0), openmm.Vec3(0, 0, BOX_NM))
    if module is not None:
        force = openmmtorch.TorchForce(module)
        force.setOutputsForces(True)
        force.setUsesPeriodicBoundaryConditions(True)
        system.addForce(force)
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform, {"Threads": str(threads)})
    context.setPositions(np.random.default_rng(0).random((n_atoms, 3)) * BOX_NM)
    return context


def time_module_calls(module, n_atoms: int, calls: int) -> float:
    """Wall ms per call of ``module`` on an (n_atoms, 3) float64 tensor that requires grad."""
    positions = torch.rand(n_atoms, 3, dtype=torch.float64).requires_grad_(True)
    box = torch.eye(3, dtype=torch.float64) * BOX_NM
    start = time.perf_counter()
    for _ in range(calls):
        module(positions, box)[0].item()
    return (time.perf_counter() - start) / calls * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atoms", type=int, nargs="+", default=[734, 31800])
    parser.add_argument("--evaluations", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="OpenMM CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(1)
    module = torch.jit.script(ZeroForces())
    frozen = torch.jit.freeze(torch.jit.script(ZeroForces()).eval())  # as openmm-torch runs it
    print("N | empty System | TorchForce (zero forces) | its module from Python | TorchForce - empty - module (ms)")
    for n_atoms in args.atoms:
        contexts = {"empty": free_particles_context(n_atoms, None, args.threads),
                    "torchforce": free_particles_context(n_atoms, module, args.threads)}
        samples = {"empty": [], "torchforce": [], "module": []}
        for round_index in range(args.repeats + 1):  # the first round warms up and is not kept
            times = {name: timing.time_evaluations(context, -1, args.evaluations).wall_ms
                     for name, context in contexts.items()}
            times["module"] = time_module_calls(frozen, n_atoms, args.evaluations)
            for name, value in times.items():
                if round_index > 0:
                    samples[name].append(value)
        empty, torchforce, called = (timing.median(samples[name]) for name in ("empty", "torchforce", "module"))
        print(f"{n_atoms} | {empty:.3f} | {torchforce:.3f} | {called:.3f} | {torchforce - empty - called:.3f}")


if __name__ == "__main__":
    main()
