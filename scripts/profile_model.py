"""Where does one call of a region model spend its time? The torch profiler's operator table.

    python scripts/profile_model.py [--smiles Cc1ccccc1] [--model aimnet2] [--option member=0]
                                    [--calls 10] [--rows 25] [--device cuda] [--autograd]

Builds the molecule with OpenFF (one conformer), creates the region model through mlmm's
plugin registry, times ``--calls`` calls (energy and forces as the mechanical embedding's
TorchForce computes them: in energy-only mode, or by one autograd pass with ``--autograd``,
as the electrostatic embedding does) on one PyTorch thread, as ML/MM on the CPU platform runs, and
prints the operators by their own CPU time per call, with input shapes: the operator count
per call shows per-operation overhead, the shapes show which matrix products are slow for
their size. With ``--device cuda`` it also counts, per call, the kernel launches and the host
synchronisations (stream synchronisations, device-to-host copies) and sums the GPU kernel
time: a call whose kernels take far less than its wall time is bound by the host.
"""

from __future__ import annotations

import argparse

import mlmm  # noqa: F401  (torch before openmm)
import torch
from openff.toolkit import Molecule
from torch.profiler import ProfilerActivity, profile

from mlmm.bench.timing import model_call, time_model_calls
from mlmm.cli.common import parse_model_options
from mlmm.potentials import for_energy_only, load_plugin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smiles", default="Cc1ccccc1")
    parser.add_argument("--model", default="aimnet2")
    parser.add_argument("--option", action="append", default=[], help="model option KEY=VALUE")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--device", default="cpu", help="torch device of the model and positions (cpu, cuda)")
    parser.add_argument("--autograd", action="store_true", help="forces by autograd, not in energy-only mode")
    args = parser.parse_args()
    torch.set_num_threads(1)

    molecule = Molecule.from_smiles(args.smiles)
    molecule.generate_conformers(n_conformers=1)
    numbers = [atom.atomic_number for atom in molecule.atoms]
    positions = torch.tensor(molecule.conformers[0].m_as("nanometer"), dtype=torch.float64, device=args.device)
    model = load_plugin(args.model).create_model(
        numbers, round(molecule.total_charge.m_as("elementary_charge")), **parse_model_options(args.option)
    ).to(args.device)
    if not args.autograd:
        for_energy_only(model)
    on_gpu = positions.device.type == "cuda"

    time_model_calls(model, positions, 5)  # TorchScript profiling runs and warm-up
    timing = time_model_calls(model, positions, args.calls)
    print(f"{args.model} on {args.smiles} ({len(numbers)} atoms): {timing.wall_ms:.2f} ms per call "
          f"(CPU {timing.cpu_ms:.2f} ms)")
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if on_gpu else [ProfilerActivity.CPU]
    with profile(activities=activities, record_shapes=True) as profiler:
        for _ in range(args.calls):
            model_call(model, positions)
        if on_gpu:
            torch.cuda.synchronize(positions.device)
    events = profiler.key_averages(group_by_input_shape=True)
    if on_gpu:
        counts = {}
        for event in events:
            counts[event.key] = counts.get(event.key, 0) + event.count
        kernel_ms = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
        print(f"per call: {kernel_ms / 1e3 / args.calls:.3f} ms of GPU kernels, "
              f"{(counts.get('cudaLaunchKernel', 0) + counts.get('cuLaunchKernel', 0)) / args.calls:.0f} kernel launches, "
              f"{counts.get('cudaStreamSynchronize', 0) / args.calls:.0f} stream synchronisations, "
              f"{counts.get('cudaMemcpyAsync', 0) / args.calls:.0f} copies")
    operators = sum(event.count for event in events if event.key.startswith("aten::")) / args.calls
    print(f"{operators:.0f} aten operator calls per model call (nested ones included); "
          "times are per model call and include the profiler's own overhead")
    print(f"{'self ms':>8} {'calls':>6}  operator  input shapes")
    for event in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.rows]:
        print(f"{event.self_cpu_time_total / 1e3 / args.calls:8.3f} {event.count / args.calls:6.0f}  "
              f"{event.key}  {event.input_shapes}")


if __name__ == "__main__":
    main()
