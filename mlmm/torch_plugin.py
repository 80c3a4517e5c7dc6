"""Making sure OpenMM has loaded the openmm-torch plugin.

OpenMM loads every plugin library in its plugin folder the first time ``openmm`` is imported.
The TorchForce kernels link against libtorch and the CUDA runtime libraries that the torch
wheel ships, which the dynamic loader finds only after ``import torch``. If ``openmm`` was
imported first, those kernels are missing and any Context with a TorchForce fails with
"does not support all required kernels". Importing :mod:`mlmm` imports torch before openmm;
:func:`ensure_torch_plugin` turns the other order into a clear error.
"""

from __future__ import annotations

from .errors import MlmmError


def torch_plugin_failures() -> list[str]:
    """OpenMM's messages for openmm-torch plugin libraries that failed to load."""
    import openmm

    return [message for message in openmm.Platform.getPluginLoadFailures()
            if "OpenMMTorch" in message and "OpenCL" not in message]


def ensure_torch_plugin() -> None:
    """Raise :class:`MlmmError` when the openmm-torch kernels could not be loaded."""
    failures = torch_plugin_failures()
    if failures:
        raise MlmmError(
            "OpenMM could not load the openmm-torch plugin (" + failures[0] + "). This happens when openmm is "
            "imported before torch: import mlmm (or torch) before openmm, e.g. put `import mlmm` first."
        )
