"""Checkpoints written atomically, from which a killed run continues.

``checkpoint.xml`` is OpenMM's portable ``State`` (positions, velocities, box vectors,
global parameters such as ``lambda_ml``, time and step counter), serialized at full double
precision and written atomically (:mod:`mlmm.atomic_io`): a crash leaves the previous
complete checkpoint or the new one, never a mixture. The step counter inside it is the
authority on how far the run got.

Deterministic dynamics (NVE) continue exactly; Langevin dynamics continue with a new
random-number stream (OpenMM's binary checkpoints do not restore the noise of its custom
MTS integrators either, so nothing would be gained by them), which leaves the sampled
ensemble unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import openmm

from ..atomic_io import write_text_atomic
from ..errors import InputError

CHECKPOINT_FILE = "checkpoint.xml"


def write_checkpoint(folder: str | os.PathLike, context: openmm.Context) -> int:
    """Write ``folder``/checkpoint.xml from ``context``; return the step it records."""
    state = context.getState(getPositions=True, getVelocities=True, getParameters=True)
    write_text_atomic(Path(folder) / CHECKPOINT_FILE, openmm.XmlSerializer.serialize(state))
    return state.getStepCount()


def checkpoint_step(folder: str | os.PathLike) -> int:
    """The step recorded in ``folder``'s checkpoint; :class:`InputError` when there is none."""
    return _read_state(Path(folder)).getStepCount()


def load_checkpoint(folder: str | os.PathLike, context: openmm.Context) -> int:
    """Restore ``context`` (positions, velocities, box, parameters, time, step) from ``folder``; return the step."""
    state = _read_state(Path(folder))
    context.setState(state)
    return state.getStepCount()


def _read_state(folder: Path) -> openmm.State:
    path = folder / CHECKPOINT_FILE
    if not path.is_file():
        raise InputError(
            f"{folder} has no checkpoint ({CHECKPOINT_FILE}): the run stopped before its first checkpoint; "
            "start it again with --overwrite."
        )
    try:
        return openmm.XmlSerializer.deserialize(path.read_text())
    except Exception as exc:  # OpenMM raises a plain Exception for a malformed file
        raise InputError(f"checkpoint {path} cannot be read ({exc}); start the run again with --overwrite.") from None
