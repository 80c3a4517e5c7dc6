"""Production runs (mlmm.running): configuration, reporters, checkpoints, continuation, failures.

Real OpenMM systems from openmmtools: alanine dipeptide in vacuum (22 atoms; Reference
platform, so runs are deterministic and NVE continuations can be compared exactly) and a
1.6 nm TIP3P water box (387 atoms) for periodic output and the barostat.
"""

from __future__ import annotations

import json
import math
import warnings

import mlmm  # noqa: F401  (first: torch before openmm, so OpenMM loads the openmm-torch plugin)
import mdtraj
import numpy as np
import openmm.app as app
import openmm.unit as u
import pytest

from mlmm import InputError, MolecularSystem, SimulationError, StabilityWarning
from mlmm.running import (
    EnergyWriter,
    RunConfig,
    TrajectoryWriter,
    checkpoint_step,
    read_energies,
    read_frame_count,
    resume,
    run,
)

QUIET = {"progress": False}


@pytest.fixture(scope="module")
def dipeptide() -> MolecularSystem:
    from openmmtools import testsystems

    ts = testsystems.AlanineDipeptideVacuum(constraints=app.HBonds)
    return MolecularSystem(ts.topology, ts.positions.value_in_unit(u.nanometer), ts.system)


@pytest.fixture(scope="module")
def water_box() -> MolecularSystem:
    from openmmtools import testsystems

    ts = testsystems.WaterBox(box_edge=1.6 * u.nanometer, cutoff=0.7 * u.nanometer)
    return MolecularSystem(ts.topology, ts.positions.value_in_unit(u.nanometer), ts.system)


def nve_config(output, **changes) -> RunConfig:
    """NVE velocity-Verlet RESPA (k = 2, 1 fs inner) on the Reference platform."""
    options = dict(output=str(output), ensemble="nve", mts_factor=2, inner_timestep="1fs", platform="Reference",
                   seed=3, equilibration=0, trajectory="trajectory.xtc", trajectory_interval=20, energy_interval=10,
                   checkpoint_interval=100)
    options.update(changes)
    return RunConfig(**options)


# ---------------------------------------------------------------------- configuration
def test_config_units_and_lengths():
    config = RunConfig(output="x", length="2ps", mts_factor=2, inner_timestep="2fs", equilibration=0.5 * u.picosecond,
                       temperature=310 * u.kelvin, pressure=1.01325 * u.bar).validate()
    assert config.outer_timestep == pytest.approx(0.004)
    assert config.total_steps == 500
    assert config.equilibration_steps == 125
    assert config.temperature == pytest.approx(310.0)
    # a length that is not a whole number of outer steps is rounded up
    assert RunConfig(output="x", length="10fs", mts_factor=3, inner_timestep="1fs").total_steps == 4
    assert RunConfig(output="x", steps=7).total_steps == 7
    assert RunConfig(output="x", steps=1, model="none").model is None


def test_config_validation_reports_every_problem_at_once():
    config = RunConfig(output="x", steps=10, length="2ps", mts_factor=0, temperature=-5, inner_timestep="3 parsecs",
                       ensemble="npt", trajectory="out.pdb", platform="Quantum", precision="double", model="aimnet3",
                       seed=-1, energy_interval=0, mm_region="exact")
    with pytest.raises(InputError) as error:
        config.validate()
    message = str(error.value)
    for fragment in ("either as steps", "mts_factor = 0", "temperature = -5.0 K", "'3 parsecs' is not a time",
                     "ensemble = 'npt'", "trajectory = 'out.pdb'", "platform = 'Quantum' is not available",
                     "model = 'aimnet3' is unknown", "seed = -1", "energy_interval = 0", "mm_region = 'exact'"):
        assert fragment in message


@pytest.mark.parametrize("model, k, inner, warned", [
    ("aimnet2", 3, "2fs", True),   # 6 fs: failed in every configuration of the stability study
    ("aimnet2", 6, "1fs", True),
    ("aimnet2", 1, "5fs", True),   # the inner step alone is too long
    ("aimnet2", 2, "2fs", False),  # the default, 4 fs
    ("aimnet2", 4, "1fs", False),
    (None, 3, "2fs", False),       # pure MM: no slow group to resonate
])
def test_an_outer_step_beyond_the_stable_4_fs_draws_a_warning(model, k, inner, warned):
    config = RunConfig(output="x", steps=10, model=model, mts_factor=k, inner_timestep=inner)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config.validate()
    messages = [str(w.message) for w in caught if issubclass(w.category, StabilityWarning)]
    assert len(messages) == int(warned)
    if warned:
        inner_fs = int(inner[0])
        assert f"outer step of {k * inner_fs} fs" in messages[0]
        advice = f"use k = {4 // inner_fs} or less" if inner_fs <= 4 else "use an inner step of 2 fs with k = 2"
        assert advice in messages[0]


# ---------------------------------------------------------------------- reporters
@pytest.mark.parametrize("suffix", [".dcd", ".xtc", ".h5"])
def test_trajectory_truncated_to_a_checkpoint_then_appended(tmp_path, water_box, suffix, capfd):
    """Keep the first frames of a file cut off mid-frame, then append: nothing lost, nothing repeated,
    and nothing printed (MDTraj's DCD reader writes the file's format to the process's stdout)."""
    path = tmp_path / f"traj{suffix}"
    rng = np.random.default_rng(0)
    box = water_box.box_vectors
    frames = [water_box.positions + rng.normal(0, 0.01, water_box.positions.shape) for _ in range(12)]
    writer = TrajectoryWriter(path, water_box.topology)
    for i, xyz in enumerate(frames[:8]):
        writer.write(xyz, box, time_ps=0.1 * (i + 1), step=50 * (i + 1))
    writer.flush()
    writer.close()
    with open(path, "ab") as handle:  # what a crash in the middle of a frame leaves behind
        handle.write(b"\x00\x01partial frame")
    writer = TrajectoryWriter(path, water_box.topology, keep_frames=5)
    for i, xyz in enumerate(frames[8:], start=5):
        writer.write(xyz, box, time_ps=0.1 * (i + 1), step=50 * (i + 1))
    writer.close()
    assert read_frame_count(path) == 9
    assert capfd.readouterr().out == ""
    # HDF5 holds its own topology
    top = {} if suffix == ".h5" else {"top": mdtraj.Topology.from_openmm(water_box.topology)}
    traj = mdtraj.load(str(path), **top)
    expected = np.array(frames[:5] + frames[8:])
    assert np.abs(traj.xyz - expected).max() < 2e-3  # XTC keeps 1e-3 nm
    assert np.allclose(traj.unitcell_lengths, 1.6, atol=1e-3)
    if suffix != ".dcd":  # DCD stores no times
        assert np.allclose(traj.time, 0.1 * np.arange(1, 10), atol=1e-5)


def test_trajectory_with_fewer_frames_than_the_checkpoint_is_an_error(tmp_path, water_box):
    path = tmp_path / "t.xtc"
    writer = TrajectoryWriter(path, water_box.topology)
    writer.write(water_box.positions, water_box.box_vectors, 0.1, 1)
    writer.close()
    with pytest.raises(InputError, match="holds 1 complete frames, but the checkpoint expects 3"):
        TrajectoryWriter(path, water_box.topology, keep_frames=3)
    assert read_frame_count(path) == 1  # the file is left as it was


@pytest.mark.parametrize("suffix", [".dcd", ".xtc", ".h5"])
def test_checkpoint_before_the_first_frame(tmp_path, water_box, suffix):
    """A checkpoint can come before any frame (a run shorter than the trajectory interval); resuming
    from it keeps zero frames and appends."""
    path = tmp_path / f"traj{suffix}"
    writer = TrajectoryWriter(path, water_box.topology)
    writer.flush()
    writer.close()
    writer = TrajectoryWriter(path, water_box.topology, keep_frames=0)
    writer.write(water_box.positions, water_box.box_vectors, 0.1, 50)
    writer.close()
    assert read_frame_count(path) == 1


def test_run_shorter_than_the_trajectory_interval(tmp_path, dipeptide):
    folder = tmp_path / "run"
    result = run(nve_config(folder, length="0.02ps", trajectory="trajectory.dcd", trajectory_interval=100), dipeptide,
                 **QUIET)
    assert result.steps == 10 and checkpoint_step(folder) == 10  # 2 fs outer steps
    assert read_energies(folder / "energies.csv")["step"] == [10]
    result = resume(folder, length="0.4ps", **QUIET)
    assert result.started_at_step == 10 and read_frame_count(folder / "trajectory.dcd") == 2

def test_energy_rows_truncated_to_a_checkpoint_then_appended(tmp_path):
    path = tmp_path / "energies.csv"
    writer = EnergyWriter(path, ["step", "time_ps", "mm_kj_mol"])
    for step in range(10, 90, 10):
        writer.write({"step": step, "time_ps": step * 0.002, "mm_kj_mol": -1.5 * step})
    writer.close()
    with open(path, "a") as handle:
        handle.write("90,0.18,-13")  # a row cut off by the crash
    writer = EnergyWriter(path, ["step", "time_ps", "mm_kj_mol"], keep_through_step=50)
    writer.write({"step": 60, "time_ps": 0.12, "mm_kj_mol": 7.0})
    writer.close()
    table = read_energies(path)
    assert table["step"] == [10, 20, 30, 40, 50, 60]
    assert table["mm_kj_mol"] == [-15.0, -30.0, -45.0, -60.0, -75.0, 7.0]
    with pytest.raises(InputError, match="does not have the columns"):
        EnergyWriter(path, ["step", "time_ps", "ml_kj_mol"], keep_through_step=50)


# ---------------------------------------------------------------------- runs
def test_run_writes_the_documented_layout(tmp_path, dipeptide):
    folder = tmp_path / "run"
    config = RunConfig(output=str(folder), ensemble="nvt", mts_factor=2, inner_timestep="1fs", length="0.4ps",
                       platform="Reference", seed=5, equilibration="0.1ps", trajectory="traj.h5",
                       trajectory_interval=25, energy_interval=10, checkpoint_interval=60)
    result = run(config, dipeptide, **QUIET)
    assert result.steps == 200 and result.started_at_step == 0 and result.platform == "Reference"
    assert result.torch_threads is None  # pure MM: no PyTorch threads to report
    assert result.time_ps == pytest.approx(0.4)
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoint.xml", "energies.csv", "energies.png", "final.pdb", "run.json", "system", "traj.h5"]
    record = json.loads((folder / "run.json").read_text())
    assert record["config"]["seed"] == 5 and record["resolved"]["total_steps"] == 200
    assert record["resolved"]["integrator"] == "MTSLangevinMiddleIntegrator"
    assert record["resolved"]["degrees_of_freedom"] == 3 * 22 - 12 - 3
    table = read_energies(folder / "energies.csv")
    assert table["step"] == list(range(10, 201, 10))
    assert np.allclose(table["time_ps"], 0.002 * np.arange(10, 201, 10))
    # pure MM: the MM term is the whole potential; total = potential + kinetic
    assert np.allclose(table["mm_kj_mol"], table["potential_kj_mol"])
    assert np.allclose(table["total_kj_mol"], np.add(table["potential_kj_mol"], table["kinetic_kj_mol"]))
    assert 150 < np.mean(table["temperature_k"]) < 450
    traj = mdtraj.load(str(folder / "traj.h5"))
    assert traj.n_frames == 8 and np.allclose(traj.time, 0.05 * np.arange(1, 9))
    assert checkpoint_step(folder) == 200
    final = app.PDBFile(str(folder / "final.pdb"))
    assert np.allclose(final.getPositions(asNumpy=True).value_in_unit(u.nanometer), traj.xyz[-1], atol=1e-3)
    assert MolecularSystem.load(folder / "system").n_atoms == 22


def test_resumed_nve_run_equals_the_uninterrupted_one(tmp_path, dipeptide):
    """NVE is deterministic on Reference, and the checkpoint keeps full precision: a run stopped
    at step 300 and continued to 600 reproduces the uninterrupted run row for row."""
    whole = run(nve_config(tmp_path / "whole", steps=600), dipeptide, **QUIET)
    run(nve_config(tmp_path / "split", steps=300), dipeptide, **QUIET)
    resumed = resume(tmp_path / "split", steps=600, **QUIET)
    assert (whole.steps, resumed.steps, resumed.started_at_step) == (600, 600, 300)
    a, b = read_energies(tmp_path / "whole" / "energies.csv"), read_energies(tmp_path / "split" / "energies.csv")
    assert a["step"] == b["step"] == list(range(10, 601, 10))
    assert np.array_equal(a["total_kj_mol"], b["total_kj_mol"])
    ta = mdtraj.load(str(tmp_path / "whole" / "trajectory.xtc"), top=str(tmp_path / "whole" / "final.pdb"))
    tb = mdtraj.load(str(tmp_path / "split" / "trajectory.xtc"), top=str(tmp_path / "split" / "final.pdb"))
    assert ta.n_frames == tb.n_frames == 30
    assert np.array_equal(ta.xyz, tb.xyz)
    # a finished run continues only when a longer length is asked for
    with pytest.raises(InputError, match="would shorten it"):
        resume(tmp_path / "split", steps=400, **QUIET)


#: over 10 ps of 22 atoms (51 degrees of freedom) velocity Verlet at 1 fs keeps the total energy
#: within 0.5 kJ/mol (0.2 kT) of its linear fit's start; see tests/test_splitting.py for the bound.
MAX_DRIFT_KJ_MOL = 0.5


def test_nve_run_conserves_energy(tmp_path, dipeptide):
    run(nve_config(tmp_path / "nve", length="10ps", mts_factor=4, trajectory=None, energy_interval=2,
                   checkpoint_interval=1000), dipeptide, **QUIET)
    table = read_energies(tmp_path / "nve" / "energies.csv")
    times, total, kinetic = (np.array(table[c]) for c in ("time_ps", "total_kj_mol", "kinetic_kj_mol"))
    drift = abs(np.polyfit(times, total, 1)[0]) * (times[-1] - times[0])
    assert total.std() / kinetic.std() < 0.05
    assert drift < MAX_DRIFT_KJ_MOL


def test_explosion_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, dipeptide):
    """6 fs velocity Verlet on the peptide (flexible angles) blows up within a few dozen steps."""
    folder = tmp_path / "boom"
    config = nve_config(folder, steps=20000, mts_factor=1, inner_timestep="6fs", trajectory_interval=10,
                        checkpoint_interval=10)
    with pytest.raises(SimulationError) as error:
        run(config, dipeptide, **QUIET)
    message = str(error.value)
    step = checkpoint_step(folder)
    assert "exploded" in message or "not finite" in message
    assert f"last good checkpoint (step {step})" in message and "--resume" in message
    table = read_energies(folder / "energies.csv")
    assert all(math.isfinite(value) for value in table["total_kj_mol"])
    assert 0 < step <= table["step"][-1] < 20000
    assert read_frame_count(folder / "trajectory.xtc") == table["step"][-1] // 10


def test_barostat_changes_the_volume(tmp_path, water_box):
    folder = tmp_path / "npt"
    config = RunConfig(output=str(folder), pressure=1.0, barostat_interval=4, temperature=300, steps=100,
                       inner_timestep="2fs", platform="CPU", seed=9, minimize=False, equilibration=0,
                       trajectory="t.dcd", trajectory_interval=50, energy_interval=20, checkpoint_interval=100)
    run(config, water_box, **QUIET)
    volumes = read_energies(folder / "energies.csv")["volume_nm3"]
    assert len(set(volumes)) > 1 and all(3.0 < v < 5.2 for v in volumes)  # 1.6^3 = 4.1 nm^3
    traj = mdtraj.load(str(folder / "t.dcd"), top=str(folder / "final.pdb"))
    assert np.allclose(traj.unitcell_volumes[-1], volumes[-1], rtol=1e-3)


def test_a_row_still_being_written_is_not_read(tmp_path):
    path = tmp_path / "energies.csv"
    path.write_text("step,time_ps,potential_kj_mol\n10,0.02,-100.5\n20,0.04,-10")
    assert read_energies(path) == {"step": [10], "time_ps": [0.02], "potential_kj_mol": [-100.5]}


def test_energy_plot_needs_two_rows(tmp_path):
    from mlmm.running.energy_plot import plot_energies

    columns = ["step", "time_ps", "potential_kj_mol", "kinetic_kj_mol", "total_kj_mol", "temperature_k"]
    writer = EnergyWriter(tmp_path / "energies.csv", columns)
    writer.write(dict(zip(columns, [10, 0.02, -100.0, 50.0, -50.0, 290.0])))
    writer.flush()
    assert plot_energies(tmp_path / "energies.csv", tmp_path / "energies.png") is None
    assert not (tmp_path / "energies.png").exists()
    writer.write(dict(zip(columns, [20, 0.04, -101.0, 51.0, -50.0, 295.0])))
    writer.close()
    assert plot_energies(tmp_path / "energies.csv", tmp_path / "energies.png", 300.0).stat().st_size > 0


def test_nve_production_after_equilibration_runs_at_the_temperature_asked_for(tmp_path, water_box):
    """A minimized water box takes about half the kinetic energy of its first velocities into its
    potential energy; the equilibration draws velocities again every 0.1 ps, so the NVE run that
    follows samples near the target: 276-289 K of 300 after the default 1 ps (three seeds; 291-296 K
    after 3 ps), where a single draw left it near 170 K. The rest of the gap is the liquid's
    structure still relaxing from the minimum, which a longer equilibration closes."""
    config = nve_config(tmp_path / "nve", platform="CPU", equilibration="1ps", length="0.4ps", trajectory=None,
                        energy_interval=5)
    run(config, water_box, **QUIET)
    temperatures = read_energies(tmp_path / "nve" / "energies.csv")["temperature_k"]
    assert 240 < np.mean(temperatures) < 330


# ---------------------------------------------------------------------- refusing bad requests
def test_bad_region_fails_before_the_folder_exists(tmp_path, dipeptide):
    folder = tmp_path / "never"
    with pytest.raises(InputError, match="matches no atoms"):
        run(nve_config(folder, steps=10, region="resname XYZ"), dipeptide, **QUIET)
    assert not folder.exists()


def test_existing_folders_are_kept_unless_overwrite(tmp_path, dipeptide):
    folder = tmp_path / "run"
    run(nve_config(folder, steps=20), dipeptide, **QUIET)
    with pytest.raises(InputError, match="already exists"):
        run(nve_config(folder, steps=40), dipeptide, **QUIET)
    assert read_energies(folder / "energies.csv")["step"][-1] == 20
    run(nve_config(folder, steps=40), dipeptide, overwrite=True, **QUIET)
    assert read_energies(folder / "energies.csv")["step"][-1] == 40
    stranger = tmp_path / "not_a_run"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not an mlmm run folder"):
        run(nve_config(stranger, steps=20), dipeptide, overwrite=True, **QUIET)
    assert (stranger / "notes.txt").read_text() == "keep me"
