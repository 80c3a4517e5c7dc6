"""``mlmm run`` on the command line: refusing bad configurations, and surviving SIGKILL.

The system is alanine dipeptide in vacuum (openmmtools), saved as a system folder the way
``mlmm build`` leaves one; runs use the Reference platform, where NVE dynamics is
deterministic, so a killed and resumed run can be compared with an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import mlmm  # noqa: F401  (first: torch before openmm, so OpenMM loads the openmm-torch plugin)
import numpy as np
import openmm.app as app
import openmm.unit as u
import pytest
from mdtraj.formats import XTCTrajectoryFile

from mlmm import MolecularSystem
from mlmm.cli import main
from mlmm.running import RunConfig, checkpoint_step, read_energies, run


@pytest.fixture(scope="module")
def dipeptide_dir(tmp_path_factory):
    from openmmtools import testsystems

    ts = testsystems.AlanineDipeptideVacuum(constraints=app.HBonds)
    folder = tmp_path_factory.mktemp("systems") / "dipeptide"
    MolecularSystem(ts.topology, ts.positions.value_in_unit(u.nanometer), ts.system).save(folder)
    return folder


#: a deterministic NVE run: velocity-Verlet RESPA, k = 2, 1 fs inner step, on Reference
NVE_OPTIONS = ["--ensemble", "nve", "-k", "2", "--timestep", "1fs", "--platform", "Reference", "--seed", "3",
               "--equilibration", "0", "--trajectory", "trajectory.xtc", "--trajectory-interval", "20",
               "--energy-interval", "10", "--no-progress"]


def test_short_run_from_a_system_folder(tmp_path, dipeptide_dir, capsys):
    out = tmp_path / "run"
    assert main(["run", str(dipeptide_dir), "-o", str(out), "--length", "0.2ps", "--checkpoint-interval", "40",
                 *NVE_OPTIONS]) == 0
    assert "step 100 (t = 0.200 ps) on Reference" in capsys.readouterr().out
    assert read_energies(out / "energies.csv")["step"] == list(range(10, 101, 10))
    assert checkpoint_step(out) == 100
    # run again into the same folder: refused, unless --overwrite
    assert main(["run", str(dipeptide_dir), "-o", str(out), "--steps", "20", *NVE_OPTIONS]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["run", "--resume", "-o", str(out), "--temperature", "310", "--no-progress"]) == 2
    assert "--temperature cannot be changed" in capsys.readouterr().err
    # the options named as they are spelled on the command line, with the way out
    assert main(["run", "--resume", "-o", str(out), "-k", "1", "--timestep", "0.5fs", "--no-progress"]) == 2
    assert "--timestep, -k/--mts cannot be changed" in (err := capsys.readouterr().err) and "--overwrite" in err
    # a run folder given as the input: pointed to the system inside it
    assert main(["run", str(out), "-o", str(tmp_path / "again"), "--steps", "20", *NVE_OPTIONS]) == 2
    assert f"is an mlmm run folder; give its system, {out / 'system'}" in capsys.readouterr().err


def test_resume_needs_only_the_run_folder(tmp_path, dipeptide_dir, capsys):
    """The run folder holds its system: the input it was built from may be gone (another
    working directory, another machine), and a finished run says there is nothing left to run."""
    import shutil

    source = shutil.copytree(dipeptide_dir, tmp_path / "input")
    out = tmp_path / "run"
    assert main(["run", str(source), "-o", str(out), "--steps", "20", *NVE_OPTIONS]) == 0
    assert main(["run", "--resume", "-o", str(out), "--no-progress"]) == 0
    assert "nothing left to run" in capsys.readouterr().out
    shutil.rmtree(source)
    assert main(["run", "--resume", "-o", str(out), "--steps", "40", "--no-progress"]) == 0
    assert "step 40" in capsys.readouterr().out
    assert read_energies(out / "energies.csv")["step"] == list(range(10, 41, 10))


@pytest.mark.parametrize("options, fragment", [
    (["--model", "aimnet3"], "model = 'aimnet3' is unknown"),
    (["-k", "0"], "mts_factor = 0 must be an integer k >= 1"),
    (["--temperature", "-10"], "temperature = -10.0 K must be positive"),
    (["--region", "resname XYZ"], "region 'resname XYZ' matches no atoms"),
    (["--length", "2 parsecs"], "'2 parsecs' is not a time"),
    (["--platform", "Quantum"], "platform = 'Quantum' is not available"),
    (["--trajectory", "frames.pdb"], "has an unknown format"),
    (["--pressure", "1"], "needs a periodic system"),
])
def test_bad_configuration_is_refused_before_any_output(tmp_path, dipeptide_dir, capsys, options, fragment):
    out = tmp_path / "never"
    length = [] if "--length" in options else ["--steps", "10"]
    assert main(["run", str(dipeptide_dir), "-o", str(out), *length, "--no-progress", *options]) == 2
    error = capsys.readouterr().err
    assert error.startswith("mlmm run: error:") and fragment in error
    assert "Traceback" not in error
    assert not out.exists()


def test_an_unstable_outer_step_is_one_warning_line_and_the_command_goes_on(tmp_path, dipeptide_dir, capsys):
    """k = 3 at 2 fs with a model: warned at validation; the command then goes on to the next
    check, here a region that matches no atoms, which stops it before any output."""
    out = tmp_path / "never"
    assert main(["run", str(dipeptide_dir), "-o", str(out), "--model", "aimnet2", "-k", "3", "--timestep", "2fs",
                 "--region", "resname XYZ", "--steps", "10", "--no-progress"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("mlmm run: warning: an outer step of 6 fs (k = 3 x 2 fs) exceeds 4 fs")
    assert lines[1].startswith("mlmm run: error: region 'resname XYZ' matches no atoms")
    assert len(lines) == 2
    assert not out.exists()


def test_sigkill_then_resume_loses_and_repeats_nothing(tmp_path, dipeptide_dir):
    """Kill -9 a running `python -m mlmm run` after a checkpoint, then `--resume` it.

    The continued run has one CSV row and one frame per report interval, in order, and is
    identical to an uninterrupted run of the same configuration (deterministic NVE), so
    nothing written after the checkpoint survived twice and nothing before it was lost.
    """
    total, killed = 10000, tmp_path / "killed"
    command = [sys.executable, "-m", "mlmm", "run", str(dipeptide_dir), "-o", str(killed), "--steps", str(total),
               "--checkpoint-interval", "500", *NVE_OPTIONS]
    env = {**os.environ, "OPENMM_CPU_THREADS": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not ((killed / "checkpoint.xml").exists() and checkpoint_step(killed) >= 500):
        assert process.poll() is None, process.communicate()[1].decode()
        assert time.monotonic() < deadline, "no checkpoint after 180 s"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    stopped_at = checkpoint_step(killed)
    assert 500 <= stopped_at < total
    # a killed run never drew its energy plot; `mlmm plot` draws it from the CSV as it stands
    assert not (killed / "energies.png").exists()
    assert main(["plot", str(killed)]) == 0
    assert (killed / "energies.png").stat().st_size > 0
    assert main(["plot", str(dipeptide_dir)]) == 2  # a system folder, not a run folder

    resumed = subprocess.run([sys.executable, "-m", "mlmm", "run", "--resume", "-o", str(killed), "--no-progress"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"step {total}" in resumed.stdout

    table = read_energies(killed / "energies.csv")
    assert table["step"] == list(range(10, total + 1, 10))
    assert np.allclose(np.diff(table["time_ps"]), 0.02)
    with XTCTrajectoryFile(str(killed / "trajectory.xtc")) as handle:
        _, times, steps, _ = handle.read()
    assert steps.tolist() == list(range(20, total + 1, 20))
    assert np.allclose(np.diff(times), 0.04, atol=1e-4) and times[0] == pytest.approx(0.04)

    whole = tmp_path / "whole"
    config = RunConfig(output=str(whole), input=str(dipeptide_dir), ensemble="nve", mts_factor=2, inner_timestep="1fs",
                       platform="Reference", seed=3, equilibration=0, steps=total, trajectory="trajectory.xtc",
                       trajectory_interval=20, energy_interval=10, checkpoint_interval=500)
    run(config, progress=False)
    reference = read_energies(whole / "energies.csv")
    assert np.array_equal(reference["total_kj_mol"], table["total_kj_mol"])


def test_link_atoms_and_mm_region_reach_the_mixed_system(tmp_path, dipeptide_dir, capsys):
    """A region that cuts the CA-CB bond (the alanine side chain) is refused without --link-atoms
    and runs with it (methane: CB, its hydrogens and a link hydrogen); --mm-region is recorded."""
    options = ["--model", "aimnet2", "--region", "resname ALA and name CB HB1 HB2 HB3", "--steps", "2", "--equilibration", "0",
               "--no-minimize", "--platform", "Reference", "--no-progress", "--trajectory", "none"]
    refused = tmp_path / "refused"
    assert main(["run", str(dipeptide_dir), "-o", str(refused), *options]) == 2
    assert "link_atoms=True" in capsys.readouterr().err
    assert not refused.exists()
    folder = tmp_path / "capped"
    assert main(["run", str(dipeptide_dir), "-o", str(folder), *options, "--link-atoms", "--mm-region", "box"]) == 0
    config = json.loads((folder / "run.json").read_text())["config"]
    assert config["link_atoms"] is True and config["mm_region"] == "box"
