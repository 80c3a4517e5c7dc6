"""Does the MM force evaluation before it slow the ML call? The bridge overhead in both cache states.

    python scripts/profile_cache_state.py runs/bench/t4l-toluene [--rounds 100] [--threads 2] [--optimized-torchscript]

In a run the slow group's TorchForce is evaluated right after the MM forces, whose data (a
neighbour list and a PME grid for 31,800 atoms) push the model's weights out of the caches.
This times, on a saved system (``mlmm build``), an empty evaluation, the ML TorchForce and the
bare model call, each once right after an untimed MM evaluation ("after MM", as
``mlmm bench`` times them) and once right after an untimed repeat of itself ("after itself"),
in interleaved rounds, and prints the medians and the TorchForce's own overhead
(TorchForce - empty - model) / model in each state. Comparing a TorchForce evaluated after
MM with a model call timed after another call counts the cache misses as overhead of the
bridge.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import time

import mlmm  # noqa: F401  (torch before openmm)
import openmm
import torch

from mlmm import forcegroups
from mlmm.bench import timing
from mlmm.bench.harness import (BenchmarkSettings, _mixed_system, _whole_region_positions, ml_force_in_own_group,
                                resolve_system)
from mlmm.torchscript_execution import unoptimized_torchscript


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("system", help="a folder written by mlmm build")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2, help="OpenMM CPU threads")
    parser.add_argument("--optimized-torchscript", action="store_true",
                        help="leave TorchScript's graph-executor optimisations on (mlmm switches them off on the CPU)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    name, molecular_system = resolve_system(args.system)
    mixed = _mixed_system(molecular_system, BenchmarkSettings())
    ml_group = ml_force_in_own_group(mixed)
    context = openmm.Context(mixed.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"),
                             {"Threads": str(args.threads)})
    context.setPositions(molecular_system.positions)
    region = _whole_region_positions(mixed, molecular_system.positions, "cpu")
    mm = functools.partial(timing.evaluate, context, forcegroups.group_mask(*forcegroups.MM_GROUPS))
    work = {"empty": functools.partial(timing.evaluate, context, 0),
            "TorchForce": functools.partial(timing.evaluate, context, forcegroups.group_mask(ml_group)),
            "model": functools.partial(timing.model_call, mixed.region_model, region)}
    # as mlmm's runs on the CPU execute TorchScript (mlmm.torchscript_execution), unless asked otherwise
    execution = contextlib.nullcontext() if args.optimized_torchscript else unoptimized_torchscript("CPU")
    with execution:
        for item in (mm, *work.values()):
            item()
            item()
        samples = {(item, state): [] for item in work for state in ("after MM", "after itself")}
        for _ in range(args.rounds):
            for item, run in work.items():
                for state, before in (("after MM", mm), ("after itself", run)):
                    before()
                    start = time.perf_counter()
                    run()
                    samples[item, state].append(1e3 * (time.perf_counter() - start))
    medians = {key: timing.median(values) for key, values in samples.items()}
    print(f"{name}, wall ms, medians of {args.rounds} interleaved rounds")
    for state in ("after MM", "after itself"):
        empty, torchforce, model = (medians[item, state] for item in work)
        overhead = torchforce - empty - model
        print(f"{state:>12}: empty {empty:.3f} | TorchForce {torchforce:.3f} | model {model:.3f} | "
              f"TorchForce - empty - model {overhead:.3f} ms = {overhead / model:.3f} of the model")


if __name__ == "__main__":
    main()
