"""Stability study of difference splitting: which MTS factor k is safe, at which inner step.

For each configuration (system, embedding, inner step, k, hydrogen mass repartitioning) the
study minimizes, runs Langevin dynamics (NVT, 300 K) and then velocity-Verlet RESPA (NVE)
from the last NVT state, and reports:

- ``stable``: no NaN and no exploding energy;
- ``temperature_k``: mean kinetic temperature of the NVT run (K), and its standard deviation;
- ``max_bond_deviation_nm``: over the region's unconstrained bonds, the largest deviation of a
  bond length from that bond's mean length in the NVT run (nm): resonance artefacts of a too
  large outer step show up here first;
- ``nve_drift``: slope of the total energy in the NVE run, in kJ/mol per ns per degree of
  freedom (the quantity is small and noisy for short runs; compare it with the k = 1 row);
- ``ms_per_outer_step`` and ``ns_per_day`` of the NVT run on the platform used.

:mod:`.study` runs configurations; each finished row is added to a JSON results file, and a
configuration in progress is saved beside it (:mod:`.progress`), so a killed study continues
where it stopped, within a configuration too. :mod:`.results` reads and joins results files
(rows of other run lengths are refused rather than mixed), renders the Markdown table and
draws bond deviation and NVE drift against the outer time step.
"""

from .progress import ConfigurationProgress, describe_progress, load_progress
from .results import load_results, markdown_table, merge_results, plot
from .study import (
    EXPLOSION_KJ_PER_MOL_PER_ATOM,
    SAVE_EVERY_S,
    TEMPERATURE_K,
    StudyConfig,
    degrees_of_freedom,
    progress_folder_of,
    progress_path_of,
    region_free_bonds,
    run_configuration,
    run_study,
    study_grid,
)

__all__ = [
    "EXPLOSION_KJ_PER_MOL_PER_ATOM", "SAVE_EVERY_S", "TEMPERATURE_K", "ConfigurationProgress", "StudyConfig",
    "degrees_of_freedom", "describe_progress", "load_progress", "load_results", "markdown_table", "merge_results", "plot",
    "progress_folder_of", "progress_path_of", "region_free_bonds", "run_configuration", "run_study", "study_grid",
]
