"""Which thread settings make ML/MM fastest on this machine? Interleaved, in one process.

    python scripts/profile_threads.py SYSTEM [--configs 2x1 2x2 1x1] [--steps 20] [--repeats 5]

SYSTEM is a recipe name in systems/, a recipe file or a saved folder. Each configuration
``OxT`` means O OpenMM CPU threads and T PyTorch threads. Every configuration gets its own
Contexts (mm, torchforce, mts rows of mlmm.bench) and the configurations are timed in
interleaved rounds, so a change of machine load hits all of them alike. Prints the median
ms per inner step of each row and configuration, and the bare model call per torch setting.

The PyTorch thread pool's wait policy is fixed when torch loads (``import mlmm`` sets
``OMP_WAIT_POLICY=PASSIVE`` and ``GOMP_SPINCOUNT=10000`` unless they are set): run this with
other values in the environment to see their effect. Dynamics and model calls run with
TorchScript's graph-executor optimisations off, as ``mlmm run`` runs them.
"""

from __future__ import annotations

import argparse
import copy
import math
import os

import mlmm  # noqa: F401  (torch before openmm)
import openmm
import torch

from mlmm.bench import timing
from mlmm.bench.harness import _minimized_positions, _whole_region_positions, resolve_system
from mlmm.embedding.mixed import create_mixed_system
from mlmm.splitting import DEFAULT_MTS_FACTOR, assign_force_groups, make_integrator
from mlmm.torchscript_execution import unoptimized_torchscript


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("system")
    parser.add_argument("--configs", nargs="+", default=["2x1", "2x2", "1x1", "1x2"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mts", type=int, default=DEFAULT_MTS_FACTOR)
    args = parser.parse_args()
    configs = [tuple(int(x) for x in text.split("x")) for text in args.configs]
    name, molecular_system = resolve_system(args.system)
    platform = openmm.Platform.getPlatformByName("CPU")
    positions = _minimized_positions(molecular_system, platform, {}, 50)
    mixed = create_mixed_system(molecular_system)
    mm_system = assign_force_groups(copy.deepcopy(molecular_system.system))

    def context(system, k, threads):
        ctx = openmm.Context(system, make_integrator(300, 1, 0.002, k, seed=1), platform, {"Threads": str(threads)})
        ctx.setPositions(positions)
        ctx.setVelocitiesToTemperature(300, 1)
        return ctx

    rows = {}
    for threads, torch_threads in configs:
        torch.set_num_threads(torch_threads)
        rows[(threads, torch_threads)] = {
            "mm": (context(mm_system, 1, threads), args.steps, 1),
            "torchforce": (context(mixed.system, 1, threads), args.steps, 1),
            "mts": (context(mixed.system, args.mts, threads), math.ceil(args.steps / args.mts), args.mts),
        }
    region = _whole_region_positions(mixed, positions, "cpu")
    samples = {key: {row: [] for row in ("mm", "torchforce", "mts", "model")} for key in rows}
    with unoptimized_torchscript("CPU"):  # Contexts created before it (see mlmm.torchscript_execution)
        for key, row_contexts in rows.items():
            torch.set_num_threads(key[1])
            for ctx, _, k in row_contexts.values():
                ctx.getIntegrator().step(max(1, 5 // k))
        for _ in range(args.repeats):
            for key, row_contexts in rows.items():
                torch.set_num_threads(key[1])
                for row, (ctx, steps, k) in row_contexts.items():
                    samples[key][row].append(timing.time_steps(ctx, steps).wall_ms / k)
                samples[key]["model"].append(timing.time_model_calls(mixed.region_model, region, args.steps).wall_ms)
    print(f"{name}: {molecular_system.n_atoms} atoms, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')}, load average {os.getloadavg()[0]:.1f}; "
          "median ms per inner step (model: per call)")
    print("openmm x torch threads | " + " | ".join(f"{row:>10s}" for row in ("mm", "torchforce", "mts", "model"))
          + " | mts/mm speed")
    for key, rows_ in samples.items():
        medians = {row: timing.median(values) for row, values in rows_.items()}
        print(f"{key[0]} x {key[1]:<18d} | " + " | ".join(f"{medians[row]:10.2f}" for row in medians)
              + f" | {medians['mm'] / medians['mts']:.2f}")


if __name__ == "__main__":
    main()
