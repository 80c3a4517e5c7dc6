"""The energies CSV of a run: one row every ``energy_interval`` steps.

Columns: ``step``, ``time_ps``, ``potential_kj_mol``, ``kinetic_kj_mol``, ``total_kj_mol``,
``temperature_k``, ``volume_nm3`` (periodic systems), then one ``<term>_kj_mol`` column per
energy term of the system (``mm`` for pure MM; ``mm``, ``ml``, ``mm_region``,
``ml_correction`` and ``ml_std`` for ML/MM, see ``MixedSystem.energy_terms``).

To continue a killed run, :class:`EnergyWriter` with ``keep_through_step=n`` rewrites the
file with the rows of steps <= n only (atomically) and appends after them.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from ..atomic_io import write_text_atomic
from ..errors import InputError


class EnergyWriter:
    """Append rows (dicts keyed by ``columns``) to a CSV file."""

    def __init__(self, path: str | os.PathLike, columns: list[str], keep_through_step: int | None = None):
        self.path = Path(path)
        self.columns = list(columns)
        if keep_through_step is None:
            write_text_atomic(self.path, ",".join(self.columns) + "\n")
        else:
            self._truncate(keep_through_step)
        self._handle = open(self.path, "a", newline="")
        self._writer = csv.DictWriter(self._handle, fieldnames=self.columns, lineterminator="\n")

    def write(self, row: dict) -> None:
        self._writer.writerow({key: _format(row[key]) for key in self.columns})

    def flush(self) -> None:
        """Put every row on disk (called before each checkpoint)."""
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def _truncate(self, last_step: int) -> None:
        if not self.path.is_file():
            raise InputError(f"energies file {self.path} is missing; it cannot be continued. Start again with --overwrite.")
        text = self.path.read_text()
        lines = text.split("\n")
        complete = lines[:-1]  # a last line without its newline was cut off by the crash
        if not complete or complete[0].split(",") != self.columns:
            raise InputError(
                f"energies file {self.path} does not have the columns this run writes ({', '.join(self.columns)}); "
                "it was changed outside the run. Start again with --overwrite."
            )
        kept = [complete[0]]
        for line in complete[1:]:
            step = int(next(csv.reader(io.StringIO(line)))[0])
            if step <= last_step:
                kept.append(line)
        write_text_atomic(self.path, "\n".join(kept) + "\n")


def read_energies(path: str | os.PathLike) -> dict[str, list[float]]:
    """The columns of an energies CSV as lists of floats (``step`` as ints).

    A last line without its newline (a row still being written by a running simulation, or cut
    off by a crash) is left out.
    """
    text = Path(path).read_text()
    complete = text if text.endswith("\n") else text[:text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(complete, newline=""))
    columns: dict[str, list] = {name: [] for name in reader.fieldnames or []}
    for row in reader:
        for name, value in row.items():
            columns[name].append(int(value) if name == "step" else float(value))
    return columns


def _format(value) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))
