"""Making sure OpenMM has loaded the openmm-torch plugin.

OpenMM loads every plugin library in its plugin folder the first time ``openmm`` is imported.
The TorchForce kernels link against libtorch and the CUDA runtime libraries that the torch
wheel ships, which the dynamic loader finds only after ``import torch``. If ``openmm`` was
imported first, those kernels are missing and any Context with a TorchForce fails with
"does not support all required kernels". Importing :mod:`mlmm` imports torch before openmm;
:func:`ensure_torch_plugin` turns the other order into a clear error.

The ``openmmtorch`` Python module (SWIG-generated) imports the deprecated ``simtk.openmm``
alias, which logs a deprecation warning on the root logger when first imported: every
``mlmm`` command would print it. :func:`import_openmmtorch` imports the module without that
one message.
"""

from __future__ import annotations

import logging

from .errors import MlmmError


class _SimtkAliasNotice(logging.Filter):
    """Drops the ``simtk.openmm`` deprecation record that the alias package logs at import."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "simtk.openmm" not in record.getMessage()


def import_openmmtorch() -> None:
    """``import openmmtorch`` (later imports find it loaded), without the deprecation warning of the
    ``simtk.openmm`` alias it imports."""
    root = logging.getLogger()
    notice = _SimtkAliasNotice()
    root.addFilter(notice)
    try:
        import openmmtorch  # noqa: F401
    finally:
        root.removeFilter(notice)


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
