"""Free-energy workflows: ML/MM end-state corrections and hydration free energies.

- :func:`endstate_correction`: dG(MM -> ML/MM) of a built system along LAMBDA_ML, by MBAR
  over equilibrium windows and optionally by non-equilibrium switching (Jarzynski, BAR);
- :func:`hydration_free_energies`: dG_hyd for MM (alchemical decoupling in water and in
  vacuum) and for ML/MM (plus the end-state corrections in both phases), against FreeSolv;
- :class:`Protocol`: sampling settings with the presets ``smoke``, ``quick`` and
  ``production``;
- :func:`run_legs`, :class:`Leg` and the recipes: the same machinery for any System with
  lambda parameters.

Every window and switch is one task; :func:`mlmm.freeenergy.tasks.compute` runs the graph
serially or on Dask distributed with identical results. Energies are in kJ/mol.
"""

import logging as _logging

# pymbar (imported by openmmtools) logs two banners on import; keep them out of users' output.
_pymbar_logger = _logging.getLogger("pymbar")
_level = _pymbar_logger.level
_pymbar_logger.setLevel(_logging.ERROR)
try:
    import openmmtools  # noqa: F401
    import pymbar  # noqa: F401
finally:
    _pymbar_logger.setLevel(_level)

from .analysis import MBARResult, NEQResult, mbar_analysis, neq_analysis  # noqa: E402
from .endstate import endstate_correction  # noqa: E402
from .freesolv import (  # noqa: E402
    FreeSolvEntry,
    devset_ids,
    freesolv_entries,
    freesolv_path,
    load_freesolv,
    with_freesolv_references,
)
from .hydration import HydrationReport, HydrationResult, error_statistics, hydration_free_energies  # noqa: E402
from .legs import DecoupledSystemRecipe, Leg, MixedSystemRecipe, SerializedSystem, decoupling_leg, endstate_leg  # noqa: E402
from .protocol import PRESETS, Protocol  # noqa: E402
from .states import MLLambdaState, decoupling_states, endstate_states  # noqa: E402
from .tasks import compute, task_seed  # noqa: E402
from .workflow import LegResult, run_legs  # noqa: E402

__all__ = [
    "DecoupledSystemRecipe", "FreeSolvEntry", "HydrationReport", "HydrationResult", "Leg", "LegResult", "MBARResult",
    "MLLambdaState", "MixedSystemRecipe", "NEQResult", "PRESETS", "Protocol", "SerializedSystem", "compute",
    "decoupling_leg", "decoupling_states", "devset_ids", "endstate_correction", "endstate_leg", "endstate_states",
    "error_statistics", "freesolv_entries", "freesolv_path", "hydration_free_energies", "load_freesolv",
    "mbar_analysis", "neq_analysis", "run_legs", "task_seed", "with_freesolv_references",
]
