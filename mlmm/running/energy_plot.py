"""A picture of a run's energies CSV: temperature, energies and volume against time.

:func:`plot_energies` draws one panel per quantity, all against the simulated time (ps):

- ``temperature_k`` (K), with the thermostat's target as a dashed line when there is one;
- ``potential_kj_mol`` (kJ/mol);
- ``total_kj_mol`` minus its first value (kJ/mol): with velocity Verlet (NVE) its drift is
  the energy conservation of the splitting; with a thermostat it wanders with the bath;
- ``ml_correction_kj_mol`` (kJ/mol), the ML/MM runs' ``lambda (ML - MM(region))``;
- ``volume_nm3`` (nm^3), only when it changes (a barostat).

The runner writes it as ``OUT/energies.png`` when a session of production ends, also when it
stops on an unstable state (the plot then shows what led there); :func:`mlmm.running.plot_run`
(``mlmm plot OUT``) draws it at any time from the CSV as it stands.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..figures import new_figure, plain_y_numbers, save_figure
from .energies import read_energies


def plot_energies(csv_path: str | os.PathLike, path: str | os.PathLike, target_temperature: float | None = None,
                  title: str = "") -> Path | None:
    """Draw the energies CSV ``csv_path`` into ``path`` (png, pdf, svg, ... by suffix), atomically.

    ``target_temperature`` (K) draws the thermostat's target; None for none (NVE). Returns the
    path, or None when the file has fewer than two rows (nothing is drawn, ``path`` is left alone).
    """
    columns = read_energies(csv_path)
    time_ps = columns["time_ps"]
    if len(time_ps) < 2:
        return None
    total = columns["total_kj_mol"]
    panels = [("temperature_k", "temperature (K)", columns["temperature_k"]),
              ("potential_kj_mol", "potential (kJ/mol)", columns["potential_kj_mol"]),
              ("total_kj_mol", "total - first (kJ/mol)", [value - total[0] for value in total])]
    if "ml_correction_kj_mol" in columns:
        panels.append(("ml_correction_kj_mol", "ML correction (kJ/mol)", columns["ml_correction_kj_mol"]))
    volume = columns.get("volume_nm3")
    if volume and max(volume) > min(volume):
        panels.append(("volume_nm3", "volume (nm$^3$)", volume))

    fig, axes = new_figure(len(panels), 1, figsize=(6.0, 1.7 * len(panels) + 0.6), sharex=True, squeeze=False,
                           constrained_layout=True)
    for axis, (column, label, values) in zip(axes[:, 0], panels):
        axis.plot(time_ps, values, linewidth=0.9)
        if column == "temperature_k" and target_temperature is not None:
            axis.axhline(target_temperature, color="black", linestyle="--", linewidth=0.8,
                         label=f"target {target_temperature:g} K")
            axis.legend(fontsize=7, loc="lower right")
        axis.set_ylabel(label, fontsize=8)
        plain_y_numbers(axis)
        axis.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("time (ps)")
    if title:
        axes[0, 0].set_title(title, fontsize=9)
    return save_figure(fig, path, dpi=110)
