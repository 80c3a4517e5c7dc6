"""The saved progress of one stability configuration, so that a killed run continues.

A configuration of the study can run for hours (100 ps of a solvated protein on a few CPU
cores). While it runs, :func:`mlmm.stability.run_configuration` saves what it has done into
one JSON file, written atomically (:mod:`mlmm.atomic_io`): the stage reached, the OpenMM
``State`` of the last sample (positions, velocities, box, step, serialized at full double
precision), the samples taken so far, the wall time spent and when it was saved (a copied
file keeps that time). A run that finds the file continues from it: NVE continues exactly;
Langevin dynamics continue with a new random seed, which leaves the sampled ensemble
unchanged (the row records where it continued). The file belongs to one configuration and
one set of run lengths; it is removed once the configuration's row is in the results file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import openmm
import openmm.unit as u

from ..atomic_io import write_text_atomic
from ..errors import InputError
from .results import lengths_of, same_lengths, shown_lengths

#: stages in order: minimization and equilibration not done yet, NVT run, NVE run
STAGES = ("start", "nvt", "nve")
#: how the local time of a save is written into the file and shown
_SAVED_AT_FORMAT = "%Y-%m-%d %H:%M"


@dataclass
class ConfigurationProgress:
    """What one configuration has done so far; lengths in ps, temperatures in K, bond lengths in nm."""

    key: str
    equilibration_ps: float
    nvt_ps: float
    nve_ps: float
    stage: str = "start"
    state_xml: str | None = None
    temperatures_k: list[float] = field(default_factory=list)
    bond_lengths_nm: list[list[float]] = field(default_factory=list)
    nvt_elapsed_s: float = 0.0
    nve_total_energies_kj_per_mol: list[float] = field(default_factory=list)
    continued_at_ps: list[float] = field(default_factory=list)
    saved_at: str | None = None  # local time of the last save; None in files of earlier versions

    def save(self, path: str | Path | None, context: openmm.Context) -> None:
        """Record ``context``'s state, and write everything to ``path`` atomically unless it is None."""
        state = context.getState(getPositions=True, getVelocities=True, getParameters=True)
        self.state_xml = openmm.XmlSerializer.serialize(state)
        self.saved_at = datetime.now().strftime(_SAVED_AT_FORMAT)
        if path is not None:
            write_text_atomic(path, json.dumps(asdict(self)))

    def restore(self, context: openmm.Context) -> None:
        """Put the saved positions, velocities, box, parameters, time and step into ``context``."""
        state = openmm.XmlSerializer.deserialize(self.state_xml)
        saved, now = len(state.getPositions()), context.getSystem().getNumParticles()
        if saved != now:
            raise InputError(f"the saved progress of {self.key} has {saved} atoms but the system built now has "
                             f"{now}: the recipe changed since; delete the progress file to start this "
                             "configuration again.")
        context.setState(state)


def load_progress(path: str | Path | None, key: str, lengths: dict) -> ConfigurationProgress:
    """The progress saved at ``path`` for configuration ``key``, or a fresh one when there is none.

    A file saved for another configuration or other run lengths (ps) is refused, naming it,
    rather than continued into a row of mixed lengths.
    """
    fresh = ConfigurationProgress(key, **lengths)
    if path is None or not Path(path).exists():
        return fresh
    try:
        saved = ConfigurationProgress(**json.loads(Path(path).read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise InputError(f"{path} is not the saved progress of a stability configuration ({exc}); "
                         "delete it to run the configuration from the start.") from None
    if saved.key != key or not same_lengths(lengths_of(asdict(saved)), lengths) or saved.stage not in STAGES:
        raise InputError(
            f"{path} holds the progress of {saved.key} with {shown_lengths(lengths_of(asdict(saved)))}, not of "
            f"{key} with {shown_lengths(lengths)}: delete it, or run with the lengths it was saved with.")
    return saved


def describe_progress(folder: str | Path) -> list[str]:
    """One line per configuration saved in progress in ``folder``: stage, simulated ps, when saved."""
    lines = []
    for path in sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else []:
        saved = ConfigurationProgress(**json.loads(path.read_text()))
        total_ps = saved.equilibration_ps + saved.nvt_ps + saved.nve_ps
        simulated_ps = openmm.XmlSerializer.deserialize(saved.state_xml).getTime().value_in_unit(u.picosecond)
        when = saved.saved_at or datetime.fromtimestamp(path.stat().st_mtime).strftime(_SAVED_AT_FORMAT)
        lines.append(f"in progress: {saved.key}, {saved.stage.upper()} run, {simulated_ps:.1f} of {total_ps:g} ps "
                     f"(equilibration, NVT, NVE), saved {when}")
    return lines


def remove_progress(path: str | Path | None) -> None:
    """Delete a configuration's saved progress once its row is in the results file."""
    if path is not None:
        Path(path).unlink(missing_ok=True)
