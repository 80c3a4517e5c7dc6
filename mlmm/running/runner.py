"""A production run that survives crashes: :func:`run` starts one, :func:`resume` continues one.

Output folder layout::

    OUT/run.json          the resolved configuration (seed included) and the software versions
    OUT/system/           the MolecularSystem the run started from (MolecularSystem.load)
    OUT/trajectory.dcd    one frame every trajectory_interval steps (DCD, XTC or HDF5 by suffix)
    OUT/energies.csv      one row every energy_interval steps (see mlmm.running.energies)
    OUT/checkpoint.xml    last checkpoint (OpenMM State with its step counter), written atomically
                          every checkpoint_interval steps and at the end
    OUT/final.pdb         the last state
    OUT/energies.png      temperature, energies and volume against time (mlmm.running.energy_plot),
                          drawn when a session of production ends, normally or on an unstable state

Order of work: validate the whole configuration, refuse an existing folder (unless
``overwrite``), load the system and build the Context, and only then create the folder. A
new run is minimized (with a model, first under the MM force field alone, which relaxes the
solvent at MM cost, then under ML/MM), equilibrated (not reported; velocities drawn at the
target temperature every :data:`VELOCITY_DRAW_INTERVAL_PS`), its clock reset to zero, and
checkpointed at step 0. Production advances to the next report or checkpoint step at a time;
at each stop the state is checked (every energy finite, temperature below
:data:`EXPLOSION_TEMPERATURE_FACTOR` times the target and :data:`EXPLOSION_TEMPERATURE_FLOOR`),
frames and rows are written, and at a checkpoint step both files are flushed to disk before
the checkpoint is written. A killed run is continued by :func:`resume`: it truncates the
trajectory and the CSV to the checkpoint's step and appends, so no frame or row is lost or
repeated. An unstable state raises :class:`~mlmm.errors.SimulationError` and leaves the last
good checkpoint in place.
"""

from __future__ import annotations

import copy
import io
import json
import math
import secrets
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import openmm
import openmm.app as app
import openmm.unit as u

from .. import __version__
from ..atomic_io import write_text_atomic
from ..errors import InputError, MlmmWarning, SimulationError
from ..forcegroups import ML_SLOW, MM_GROUPS
from ..molecular_system import MolecularSystem
from ..torchscript_execution import unoptimized_torchscript
from ..units import KB_KJ_PER_MOL_K
from .checkpoint import checkpoint_step, load_checkpoint, write_checkpoint
from .config import RunConfig
from .energies import EnergyWriter
from .energy_plot import plot_energies
from .setup import PreparedRun, load_input, prepare
from .trajectory import TrajectoryWriter

RUN_FILE = "run.json"
SYSTEM_FOLDER = "system"
ENERGIES_FILE = "energies.csv"
FINAL_PDB = "final.pdb"
ENERGY_PLOT = "energies.png"
#: a state hotter than max(factor * target temperature, floor) counts as exploded
EXPLOSION_TEMPERATURE_FACTOR = 5.0
EXPLOSION_TEMPERATURE_FLOOR = 2000.0  # K
#: ps of equilibration between two draws of the velocities at the target temperature (and stability checks)
VELOCITY_DRAW_INTERVAL_PS = 0.1
# The ML/MM stage of minimization follows a full MM minimization and is capped: a model's
# float32 energy (about -7e5 kJ/mol for a small ligand, resolved to ~0.05 kJ/mol) keeps L-BFGS
# from meeting a tight force tolerance, and it would spend its whole budget in line searches.
ML_MINIMIZE_MAX_ITERATIONS = 100


@dataclass
class RunResult:
    """What a finished (or continued) run did."""

    folder: Path
    steps: int  # the run's step counter at the end (production steps, all sessions)
    time_ps: float  # simulated production time at the end
    started_at_step: int  # 0 for a new run, the checkpoint's step for a continued one
    wall_seconds: float  # production stretch of this call
    ns_per_day: float  # production speed of this call
    platform: str
    torch_threads: int | None  # PyTorch's intra-op threads at the end (chosen by mlmm.threads); None for pure MM


def run(config: RunConfig, molecular_system: MolecularSystem | None = None, overwrite: bool = False,
        progress: bool = True) -> RunResult:
    """Run ``config`` from its input (or from ``molecular_system``) into ``config.output``.

    Every check that can fail runs before the output folder is created. ``overwrite``
    replaces an existing run folder; without it an existing folder is an error.
    """
    config.validate()
    folder = Path(config.output)
    _check_output_folder(folder, overwrite)
    if molecular_system is None:
        if config.input is None:
            raise InputError("no input: give a system folder or a YAML recipe (or pass a MolecularSystem).")
        if (Path(config.input) / RUN_FILE).is_file():
            raise InputError(f"input {config.input} is an mlmm run folder; give its system, "
                             f"{Path(config.input) / SYSTEM_FOLDER}, or continue it with `mlmm run --resume -o {config.input}`.")
        molecular_system = load_input(config.input)
    if config.seed is None:
        config = replace(config, seed=secrets.randbelow(2**31 - 1))
    prepared = prepare(config, molecular_system)

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    _write_run_file(folder, config, prepared)
    molecular_system.save(folder / SYSTEM_FOLDER)
    with unoptimized_torchscript(prepared.platform_name):
        _minimize_and_equilibrate(prepared, config, progress)
        write_checkpoint(folder, prepared.context)
        return _production(prepared, config, folder, start_step=0, progress=progress)


def resume(output, steps: int | None = None, length=None, platform: str | None = None,
           precision: str | None = None, progress: bool = True) -> RunResult:
    """Continue the run in ``output`` from its last checkpoint.

    ``steps`` or ``length`` (ps or a time string) set a new total length, to extend a
    finished run; ``platform`` and ``precision`` may differ from the first session.
    """
    folder = Path(output)
    saved = _saved_config(folder, "start a run there without --resume")
    if steps is not None or length is not None:
        saved.update(steps=steps, length=length)
    if platform is not None:
        saved.update(platform=platform, precision=precision)
    elif precision is not None:
        saved.update(precision=precision)
    saved["output"] = str(folder)
    config = RunConfig.from_dict(saved)
    # the system comes from the run folder: the input it was built from is only a record and
    # need not exist here (another working directory, another machine)
    replace(config, input=None).validate()
    step = checkpoint_step(folder)
    if step > config.total_steps:
        raise InputError(f"the run already reached step {step}; a total of {config.total_steps} steps would shorten it.")
    molecular_system = MolecularSystem.load(folder / SYSTEM_FOLDER)
    # a new Langevin noise stream for the continuation, not a replay of the first session's
    prepared = prepare(replace(config, seed=(config.seed + step) % (2**31 - 1)), molecular_system)
    load_checkpoint(folder, prepared.context)
    _write_run_file(folder, config, prepared)
    with unoptimized_torchscript(prepared.platform_name):
        return _production(prepared, config, folder, start_step=step, progress=progress)


def plot_run(output) -> Path | None:
    """Draw ``OUT/energies.png`` from the run's energies CSV as it is now: a run in progress, killed
    or finished. Returns the path, or None while the CSV has fewer than two complete rows."""
    folder = Path(output)
    config = RunConfig.from_dict({**_saved_config(folder, "give the output folder of `mlmm run`"),
                                  "output": str(folder)})
    if not (folder / ENERGIES_FILE).is_file():
        raise InputError(f"{folder} has no {ENERGIES_FILE} yet; production has not started.")
    return plot_energies(folder / ENERGIES_FILE, folder / ENERGY_PLOT, *_energy_plot_labels(folder, config))


def _saved_config(folder: Path, advice: str) -> dict:
    """The configuration in ``folder/run.json``; :class:`InputError` with ``advice`` when there is none."""
    run_file = folder / RUN_FILE
    if not run_file.is_file():
        raise InputError(f"{folder} is not a run folder (no {RUN_FILE}); {advice}.")
    return json.loads(run_file.read_text())["config"]


# ---------------------------------------------------------------------- stages
def _check_output_folder(folder: Path, overwrite: bool) -> None:
    """An existing folder is an error, unless ``overwrite`` and it is a run folder (or empty)."""
    if not folder.exists():
        return
    if not overwrite:
        raise InputError(f"output folder {folder} already exists; pass --overwrite to replace it or --resume to continue it.")
    if not folder.is_dir() or (any(folder.iterdir()) and not (folder / RUN_FILE).is_file()):
        raise InputError(f"{folder} exists and is not an mlmm run folder (no {RUN_FILE}); "
                         "--overwrite replaces run folders only. Choose another output folder.")


def _write_run_file(folder: Path, config: RunConfig, prepared: PreparedRun) -> None:
    record = {
        "config": config.to_dict(),
        "resolved": {
            "outer_timestep_ps": config.outer_timestep,
            "total_steps": config.total_steps,
            "equilibration_steps": config.equilibration_steps,
            "platform": prepared.platform_name,
            "integrator": type(prepared.integrator).__name__,
            "degrees_of_freedom": prepared.degrees_of_freedom,
            "n_atoms": prepared.system.getNumParticles(),
            "ml_region_atoms": None if prepared.mixed is None else len(prepared.mixed.region),
        },
        "versions": {"mlmm": __version__, "openmm": openmm.__version__},
    }
    write_text_atomic(folder / RUN_FILE, json.dumps(record, indent=1) + "\n")


def _minimize_and_equilibrate(prepared: PreparedRun, config: RunConfig, progress: bool) -> None:
    from tqdm.auto import tqdm

    context = prepared.context
    if config.minimize:
        integrator = context.getIntegrator()
        if prepared.mixed is not None:
            # relax the MM environment first at MM cost: the minimizer evaluates only the integration groups
            integrator.setIntegrationForceGroups(set(MM_GROUPS))
            _minimize(context, config, "minimizing (MM)", progress, config.minimize_max_iterations)
            integrator.setIntegrationForceGroups({*MM_GROUPS, ML_SLOW})
            _minimize(context, config, "minimizing (ML/MM)", progress, _ml_iterations(config.minimize_max_iterations))
        else:
            _minimize(context, config, "minimizing", progress, config.minimize_max_iterations)
    # Velocities are drawn at the target temperature at the start and again every
    # VELOCITY_DRAW_INTERVAL_PS of equilibration (a massive Andersen thermostat). A minimized
    # structure takes about half of the first draw's kinetic energy into its potential energy
    # within a fraction of a picosecond; velocity Verlet (NVE) never gives it back (an NVE run
    # would sample near half the temperature asked for) and a Langevin thermostat only over a
    # few 1/friction. Each draw about halves what the fast motions lack; the structure of a liquid
    # relaxes more slowly (a minimized water box in NVE after the default 1 ps: 276-289 K of 300,
    # against about 170 K after a single draw; tests/test_running.py).
    interval = max(1, round(VELOCITY_DRAW_INTERVAL_PS / config.outer_timestep))
    total = config.equilibration_steps
    with tqdm(total=total, unit="step", desc="equilibration", disable=not progress or total == 0,
              dynamic_ncols=True) as bar:
        context.setVelocitiesToTemperature(config.temperature * u.kelvin, config.seed + 1)
        for draw, start in enumerate(range(0, total, interval)):
            if draw > 0:
                context.setVelocitiesToTemperature(config.temperature * u.kelvin, config.seed + 1 + draw)
            chunk = min(interval, total - start)
            _advance(prepared, chunk, "equilibration", None)
            state = context.getState(getEnergy=True)
            _check_stable(state, prepared, config, f"equilibration step {start + chunk}", None)
            bar.update(chunk)
    context.setTime(0.0)
    context.setStepCount(0)


def _ml_iterations(max_iterations: int) -> int:
    """Iteration cap of the ML/MM minimization stage (0 means unlimited in OpenMM)."""
    return ML_MINIMIZE_MAX_ITERATIONS if max_iterations == 0 else min(max_iterations, ML_MINIMIZE_MAX_ITERATIONS)


def _minimize(context: openmm.Context, config: RunConfig, label: str, progress: bool, max_iterations: int) -> None:
    """Local energy minimization with a one-line report of the energy before and after (kJ/mol)."""
    def energy():
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)

    before = energy()
    if progress:
        print(f"{label}: {before:.1f} kJ/mol ...", end="", file=sys.stderr, flush=True)
    openmm.LocalEnergyMinimizer.minimize(context, config.minimize_tolerance, max_iterations)
    if progress:
        print(f" {energy():.1f} kJ/mol", file=sys.stderr, flush=True)


def _production(prepared: PreparedRun, config: RunConfig, folder: Path, start_step: int, progress: bool) -> RunResult:
    from tqdm.auto import tqdm

    context = prepared.context
    periodic = prepared.system.usesPeriodicBoundaryConditions()
    total = config.total_steps
    resuming = start_step > 0 or (folder / ENERGIES_FILE).exists()
    columns = _columns(prepared, periodic)
    trajectory = None
    if config.trajectory is not None:
        keep = start_step // config.trajectory_interval if resuming else None
        trajectory = TrajectoryWriter(folder / config.trajectory, prepared.molecular_system.topology, keep_frames=keep)
    energies = EnergyWriter(folder / ENERGIES_FILE, columns, keep_through_step=start_step if resuming else None)
    intervals = [config.energy_interval, config.checkpoint_interval]
    if trajectory is not None:
        intervals.append(config.trajectory_interval)
    bar = tqdm(total=total, initial=start_step, unit="step", desc="mlmm run", disable=not progress, dynamic_ncols=True)
    step, started = start_step, time.perf_counter()
    try:
        while step < total:
            target = min(total, *(_next_multiple(step, n) for n in intervals))
            _advance(prepared, target - step, f"steps {step}-{target}", folder)
            step = target
            context.setStepCount(step)  # outer steps; an MTS integrator's sub-integrators each count their own
            frame_due = trajectory is not None and step % config.trajectory_interval == 0
            state = context.getState(getEnergy=True, getPositions=frame_due, enforcePeriodicBox=periodic)
            _check_stable(state, prepared, config, f"step {step} (t = {state.getTime().value_in_unit(u.picosecond):.4f} ps)",
                          folder)
            if frame_due:
                box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer) if periodic else None
                trajectory.write(state.getPositions(asNumpy=True).value_in_unit(u.nanometer), box,
                                 state.getTime().value_in_unit(u.picosecond), step)
            if step % config.energy_interval == 0:
                energies.write(_energy_row(state, prepared, step, periodic))
            if step % config.checkpoint_interval == 0 or step == total:
                if trajectory is not None:
                    trajectory.flush()
                energies.flush()
                write_checkpoint(folder, context)
            elapsed = time.perf_counter() - started
            bar.update(step - bar.n)
            bar.set_postfix_str(f"{_ns_per_day(step - start_step, config, elapsed):.2f} ns/day", refresh=False)
    finally:
        bar.close()
        energies.close()
        if trajectory is not None:
            trajectory.close()
        _write_energy_plot(folder, config)
    wall = time.perf_counter() - started
    _write_final_pdb(folder / FINAL_PDB, prepared, periodic)
    return RunResult(folder, step, step * config.outer_timestep, start_step, wall,
                     _ns_per_day(step - start_step, config, wall), prepared.platform_name,
                     None if prepared.mixed is None else prepared.threads.threads)


# ---------------------------------------------------------------------- helpers
def _advance(prepared: PreparedRun, n_steps: int, where: str, folder: Path | None) -> None:
    try:
        prepared.advance(n_steps)
    except openmm.OpenMMException as exc:
        raise SimulationError(f"the simulation failed during {where}: {exc}. {_advice(folder)}") from None


def _check_stable(state: openmm.State, prepared: PreparedRun, config: RunConfig, where: str,
                  folder: Path | None) -> None:
    potential = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    kinetic = state.getKineticEnergy().value_in_unit(u.kilojoule_per_mole)
    temperature = _temperature(kinetic, prepared.degrees_of_freedom)
    limit = max(EXPLOSION_TEMPERATURE_FACTOR * config.temperature, EXPLOSION_TEMPERATURE_FLOOR)
    if not (math.isfinite(potential) and math.isfinite(kinetic)):
        problem = f"the energy is not finite (potential {potential} kJ/mol, kinetic {kinetic} kJ/mol)"
    elif temperature > limit:
        problem = f"the system exploded: temperature {temperature:.4g} K exceeds {limit:.0f} K"
    else:
        return
    raise SimulationError(f"at {where} {problem}. {_advice(folder)}")


def _advice(folder: Path | None) -> str:
    fix = ("Start the run again (--overwrite) with a shorter inner time step (--timestep) or a smaller MTS "
           "factor (-k), or minimize and equilibrate longer")
    if folder is None:
        return f"{fix}; no checkpoint was written yet."
    return (f"{fix}. The last good checkpoint (step {checkpoint_step(folder)}) is kept in {folder}: "
            f"`mlmm run --resume -o {folder}` continues from it with the same settings (a Langevin run with fresh noise), "
            "which helps only after a rare event.")


def _temperature(kinetic_kj_mol: float, degrees_of_freedom: int) -> float:
    """Instantaneous temperature (K) by equipartition: T = 2 K / (n_dof k_B)."""
    return 2.0 * kinetic_kj_mol / (degrees_of_freedom * KB_KJ_PER_MOL_K) if degrees_of_freedom > 0 else 0.0


def _columns(prepared: PreparedRun, periodic: bool) -> list[str]:
    columns = ["step", "time_ps", "potential_kj_mol", "kinetic_kj_mol", "total_kj_mol", "temperature_k"]
    if periodic:
        columns.append("volume_nm3")
    return columns + [f"{term}_kj_mol" for term in prepared.energy_terms()]


def _energy_row(state: openmm.State, prepared: PreparedRun, step: int, periodic: bool) -> dict:
    potential = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    kinetic = state.getKineticEnergy().value_in_unit(u.kilojoule_per_mole)
    row = {
        "step": step,
        "time_ps": round(state.getTime().value_in_unit(u.picosecond), 9),
        "potential_kj_mol": potential,
        "kinetic_kj_mol": kinetic,
        "total_kj_mol": potential + kinetic,
        "temperature_k": _temperature(kinetic, prepared.degrees_of_freedom),
    }
    if periodic:
        row["volume_nm3"] = state.getPeriodicBoxVolume().value_in_unit(u.nanometer**3)
    row.update({f"{term}_kj_mol": value for term, value in prepared.energy_terms().items()})
    return row


def _next_multiple(step: int, interval: int) -> int:
    return (step // interval + 1) * interval


def _ns_per_day(steps: int, config: RunConfig, seconds: float) -> float:
    return steps * config.outer_timestep * 1e-3 / seconds * 86400.0 if seconds > 0 else float("nan")


def _write_energy_plot(folder: Path, config: RunConfig) -> None:
    """``OUT/energies.png`` from the CSV (from two rows on). A secondary output: a failure to draw it is a
    warning, never an error that would hide the run's own outcome."""
    try:
        plot_energies(folder / ENERGIES_FILE, folder / ENERGY_PLOT, *_energy_plot_labels(folder, config))
    except Exception as error:  # noqa: BLE001 (any failure of matplotlib or of the file)
        warnings.warn(f"{folder / ENERGY_PLOT} was not drawn: {error}", MlmmWarning, stacklevel=2)


def _energy_plot_labels(folder: Path, config: RunConfig) -> tuple[float | None, str]:
    """The target temperature (K; None for NVE) and the title of the run's energy plot."""
    target = None if config.ensemble == "nve" else config.temperature
    model = "MM" if config.model is None else f"{config.model}, {config.embedding} embedding, k = {config.mts_factor}"
    ensemble = "NPT" if config.pressure is not None else config.ensemble.upper()
    return target, f"{folder.name}: {model}, {ensemble}"


def _write_final_pdb(path: Path, prepared: PreparedRun, periodic: bool) -> None:
    state = prepared.context.getState(getPositions=True, enforcePeriodicBox=periodic)
    topology = prepared.molecular_system.topology
    if periodic:  # the box at the end of the run (a barostat changes it), on a copy of the topology
        topology = copy.deepcopy(topology)
        topology.setPeriodicBoxVectors(state.getPeriodicBoxVectors())
    buffer = io.StringIO()
    app.PDBFile.writeFile(topology, state.getPositions(), buffer, keepIds=True)
    write_text_atomic(path, buffer.getvalue())


__all__ = ["RunResult", "run", "resume", "plot_run"]
