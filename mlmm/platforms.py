"""OpenMM platforms by name: which this machine has, and a clear error for one it lacks.

``mlmm run``, ``bench`` and ``stability`` check ``--platform`` here before any system is built
or any output is written; a free-energy task checks it when it starts, on the machine that runs
it (a Dask worker may have platforms the client lacks).
"""

from __future__ import annotations

import openmm

from .errors import InputError

#: platforms whose precision can be chosen; Reference is always double, CPU always single/mixed
GPU_PLATFORMS = ("CUDA", "OpenCL", "HIP")
KNOWN_PLATFORMS = ("Reference", "CPU", *GPU_PLATFORMS)
#: platforms that run on the host's cores, where OpenMM's threads and PyTorch's share them
CPU_PLATFORMS = ("CPU", "Reference")


def available_platforms() -> list[str]:
    """Names of the OpenMM platforms this installation can use (plugins that failed to load are absent)."""
    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]


def platform_problem(name: str) -> str | None:
    """Why the platform called ``name`` cannot be used here, or None when it can."""
    available = available_platforms()
    if name in available:
        return None
    hint = "" if name in KNOWN_PLATFORMS else f" (known OpenMM platforms: {', '.join(KNOWN_PLATFORMS)})"
    return f"platform = {name!r} is not available here; available: {', '.join(available)}{hint}."


def get_platform(name: str) -> openmm.Platform:
    """The OpenMM platform called ``name``; :class:`InputError` naming the available ones if it is missing."""
    problem = platform_problem(name)
    if problem is not None:
        raise InputError(problem)
    return openmm.Platform.getPlatformByName(name)
