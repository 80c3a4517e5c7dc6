"""Real ANI-2x and MACE-OFF architectures with GENERATED (random) weights, saved for tests.

Their pretrained weights are downloaded by TorchANI / mace-torch on first use and cannot be
fetched here; the architectures and loading code are the real ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def save_generated_ani2x(path: Path, seed: int) -> Path:
    """Save the state dict of mlmm's ANI-2x architecture with seeded random weights to ``path``."""
    from mlmm_plugins.ani2x import ani2x_architecture

    torch.manual_seed(seed)
    torch.save(ani2x_architecture().state_dict(), path)
    return path


def save_generated_mace_off(path: Path, seed: int) -> Path:
    """Save a whole MACE model with MACE-OFF23 "small" hyperparameters and seeded random weights."""
    import mace  # noqa: F401  (before e3nn: lets e3nn load its constants under torch >= 2.6)
    from e3nn import o3
    from mace import modules

    torch.manual_seed(seed)
    elements = [1, 6, 7, 8, 9, 15, 16, 17, 35, 53]
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    model = modules.ScaleShiftMACE(
        r_max=4.5, num_bessel=8, num_polynomial_cutoff=5, max_ell=3, interaction_cls=block,
        interaction_cls_first=block, num_interactions=2, num_elements=len(elements),
        hidden_irreps=o3.Irreps("96x0e"), MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.linspace(-500.0, -10.0, len(elements)), avg_num_neighbors=10.0,
        atomic_numbers=elements, correlation=3, gate=torch.nn.functional.silu,
        atomic_inter_scale=0.5, atomic_inter_shift=0.0,
    )
    torch.save(model, path)
    return path
