"""What the MMRegion subtraction costs with each way of computing it.

    python scripts/profile_mm_region.py SYSTEM [--steps 20] [--repeats 5] [--threads 2]

SYSTEM is a recipe name in systems/, a recipe file or a saved folder.

The ML correction of :func:`mlmm.embedding.create_mixed_system` subtracts the MM energy of
the region alone (:mod:`mlmm.embedding.mm_region`), its nonbonded part either over the
region's atom pairs (``mm_region="pairs"``, the default) or exactly with the region's periodic
images (``"box"``: a NonbondedForce copy over the whole box with PME). For each, this script
prints the subtraction's energy and force differences from ``box``, the time of one
evaluation of the subtraction alone, and the ms per inner step of MM alone and of ML/MM with
MTS (k = ``--mts``, default mlmm.splitting.DEFAULT_MTS_FACTOR) on the CPU platform, timed in
interleaved rounds.
"""

from __future__ import annotations

import argparse
import copy
import math
import os

import mlmm  # noqa: F401  (torch before openmm)
import numpy as np
import openmm
import openmm.unit as u
import torch

from mlmm import forcegroups
from mlmm.bench import timing
from mlmm.bench.harness import _minimized_positions, resolve_system
from mlmm.embedding.mixed import ML_FORCE_NAME, create_mixed_system
from mlmm.embedding.mm_region import NONBONDED_METHODS
from mlmm.splitting import DEFAULT_MTS_FACTOR, assign_force_groups, make_integrator

_NM = u.nanometer
_KJ = u.kilojoule_per_mole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("system")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="OpenMM CPU threads")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--mts", type=int, default=DEFAULT_MTS_FACTOR)
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    name, molecular_system = resolve_system(args.system)
    platform = openmm.Platform.getPlatformByName("CPU")
    properties = {"Threads": str(args.threads)}
    positions = _minimized_positions(molecular_system, platform, properties, 50)
    variants = {method: create_mixed_system(molecular_system, mm_region=method) for method in reversed(NONBONDED_METHODS)}
    slow = forcegroups.group_mask(forcegroups.ML_SLOW)

    # accuracy: the slow group without the TorchForce, i.e. the subtraction alone
    evaluation = {}
    for variant, mixed in variants.items():
        for force in mixed.system.getForces():
            if force.getName() == ML_FORCE_NAME:
                force.setForceGroup(2)  # out of the way for now
        context = openmm.Context(mixed.system, openmm.VerletIntegrator(0.001), platform, properties)
        context.setPositions(positions)
        state = context.getState(getEnergy=True, getForces=True, groups=slow)
        evaluation[variant] = (context, state.getPotentialEnergy().value_in_unit(_KJ),
                               state.getForces(asNumpy=True).value_in_unit(_KJ / _NM))
    reference_energy, reference_forces = evaluation["box"][1:]
    print(f"{name}: {molecular_system.n_atoms} atoms, load average {os.getloadavg()[0]:.1f}, OpenMM threads "
          f"{args.threads}, torch threads {args.torch_threads}")
    print(f"subtraction -E_MM(region) with box: {reference_energy:.4f} kJ/mol, largest force "
          f"{np.abs(reference_forces).max():.1f} kJ/mol/nm")
    for variant, (context, energy, forces) in evaluation.items():
        timing.time_evaluations(context, slow, 2)
        ms = timing.median([timing.time_evaluations(context, slow, 5).wall_ms for _ in range(args.repeats)])
        print(f"  {variant:9s} energy difference {energy - reference_energy:+.5f} kJ/mol, largest force difference "
              f"{np.abs(forces - reference_forces).max():.2e} kJ/mol/nm, {ms:.3f} ms per evaluation")
        del context
    evaluation.clear()
    for mixed in variants.values():
        for force in mixed.system.getForces():
            if force.getName() == ML_FORCE_NAME:
                force.setForceGroup(forcegroups.ML_SLOW)

    def context(system, k):
        ctx = openmm.Context(system, make_integrator(300, 1, 0.002, k, seed=1), platform, properties)
        ctx.setPositions(positions)
        ctx.setVelocitiesToTemperature(300, 1)
        ctx.getIntegrator().step(2)
        return ctx

    rows = {"mm": (context(assign_force_groups(copy.deepcopy(molecular_system.system)), 1), args.steps, 1)}
    for variant, mixed in variants.items():
        rows[f"mts {variant}"] = (context(mixed.system, args.mts), math.ceil(args.steps / args.mts), args.mts)
    samples = {row: [] for row in rows}
    for _ in range(args.repeats):
        for row, (ctx, steps, k) in rows.items():
            samples[row].append(timing.time_steps(ctx, steps).wall_ms / k)
    mm = timing.median(samples["mm"])
    print(f"ms per inner step (median of {args.repeats}), k = {args.mts}:")
    for row, values in samples.items():
        value = timing.median(values)
        print(f"  {row:14s} {value:8.2f}   speed vs mm {mm / value:.2f}")


if __name__ == "__main__":
    main()
