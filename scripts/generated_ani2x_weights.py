"""Write ANI-2x weights with GENERATED values, to time the architecture where the pretrained file cannot be downloaded.

    python scripts/generated_ani2x_weights.py OUT.pt [--seed 0] [--flat]

The file is a state dict of mlmm's ANI-2x architecture (``mlmm_plugins.ani2x``) with seeded
random weights, loadable with ``--model ani2x --model-option weights=OUT.pt``. Random
weights give forces that tear a molecule apart within picoseconds; ``--flat`` zeroes the
weights of every output layer, so the energy is a constant and the forces are zero while
each call does exactly the arithmetic of the real network (same shapes, same operators).
Such a model makes no physical sense: it is for ``mlmm bench`` only, e.g.

    python scripts/generated_ani2x_weights.py runs/bench/ani2x_flat.pt --flat
    mlmm bench --systems toluene-water --model ani2x --model-option weights=runs/bench/ani2x_flat.pt \\
        --model-option member=0
"""

from __future__ import annotations

import argparse
import io

import mlmm  # noqa: F401  (torch before openmm)
import torch

from mlmm.atomic_io import write_bytes_atomic


def generated_state_dict(seed: int, flat: bool) -> dict:
    """State dict of the ANI-2x architecture with seeded random weights (output layers zeroed when ``flat``)."""
    from mlmm_plugins.ani2x import ani2x_architecture

    torch.manual_seed(seed)
    state = ani2x_architecture().state_dict()
    if flat:
        for name, tensor in state.items():
            if name.endswith("final_layer.weight"):
                tensor.zero_()
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help="state dict file to write (.pt)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flat", action="store_true", help="zero the output layers: constant energy, zero forces")
    args = parser.parse_args()
    buffer = io.BytesIO()
    torch.save(generated_state_dict(args.seed, args.flat), buffer)
    write_bytes_atomic(args.output, buffer.getvalue())
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
