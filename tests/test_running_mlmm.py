"""An ML/MM production run with multiple time steps: AIMNet2 on toluene in water, end to end.

Toluene (15 atoms) is the ML region (the four-member AIMNet2 ensemble, so the CSV carries
its spread), mechanical embedding, MTS factor k = 2 on the CPU platform: a few dozen outer
steps, then a continuation from the checkpoint.
"""

from __future__ import annotations

import json

import mlmm  # noqa: F401  (first: torch before openmm, so OpenMM loads the openmm-torch plugin)
import numpy as np
import pytest

from mlmm.running import RunConfig, checkpoint_step, read_energies, read_frame_count, resume, run


@pytest.fixture(scope="module")
def mlmm_run(tmp_path_factory, toluene_water):
    folder = tmp_path_factory.mktemp("runs") / "toluene"
    config = RunConfig(output=str(folder), model="aimnet2", model_options={"ensemble": True}, region="ligand",
                       mts_factor=2, inner_timestep="1fs", steps=24, platform="CPU", seed=2,
                       minimize_max_iterations=20, equilibration="8fs", trajectory="trajectory.xtc",
                       trajectory_interval=6, energy_interval=3, checkpoint_interval=12)
    return folder, run(config, toluene_water, progress=False)


def test_mlmm_mts_run_reports_consistent_energies(mlmm_run, toluene_water):
    folder, result = mlmm_run
    assert result.steps == 24 and result.time_ps == pytest.approx(0.048)
    record = json.loads((folder / "run.json").read_text())
    assert record["resolved"]["integrator"] == "MTSLangevinIntegrator"
    assert record["resolved"]["ml_region_atoms"] == len(toluene_water.regions["ligand"]) == 15
    table = read_energies(folder / "energies.csv")
    assert table["step"] == list(range(3, 25, 3))
    for column in ("mm_kj_mol", "ml_kj_mol", "mm_region_kj_mol", "ml_correction_kj_mol", "ml_std_kj_mol"):
        assert np.all(np.isfinite(table[column])), column
    potential, mm = np.array(table["potential_kj_mol"]), np.array(table["mm_kj_mol"])
    correction = np.array(table["ml_correction_kj_mol"])
    # U = U_MM(all) + [E_ML - E_MM(region)] at lambda = 1; CPU sums in single precision
    assert np.allclose(potential, mm + correction, rtol=0, atol=1e-5 * np.abs(potential).max())
    assert np.allclose(correction, np.subtract(table["ml_kj_mol"], table["mm_region_kj_mol"]), atol=0.05)
    assert np.all(np.array(table["ml_std_kj_mol"]) > 0)
    assert np.all((np.array(table["temperature_k"]) > 150) & (np.array(table["temperature_k"]) < 450))
    assert read_frame_count(folder / "trajectory.xtc") == 4


def test_mlmm_run_continues_from_its_checkpoint(mlmm_run):
    folder, _ = mlmm_run
    continued = resume(folder, steps=36, progress=False)
    assert (continued.started_at_step, continued.steps, checkpoint_step(folder)) == (24, 36, 36)
    assert read_energies(folder / "energies.csv")["step"] == list(range(3, 37, 3))
    assert read_frame_count(folder / "trajectory.xtc") == 6
