"""Running the stability study: one configuration, and a grid of them resumed from a results file."""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as u

from ..atomic_io import write_text_atomic
from ..errors import InputError, SimulationError
from ..platforms import get_platform
from ..splitting import make_integrator
from ..threads import TorchThreadTuner, torch_thread_tuner
from ..torchscript_execution import unoptimized_torchscript
from ..units import KB_KJ_PER_MOL_K
from .progress import ConfigurationProgress, load_progress, remove_progress
from .results import check_resumable, load_results

TEMPERATURE_K = 300.0
#: a potential energy above this (kJ/mol per atom) counts as an explosion
EXPLOSION_KJ_PER_MOL_PER_ATOM = 1.0e3
#: a configuration in progress is saved this often (wall seconds), and when its NVT run ends
SAVE_EVERY_S = 300.0
#: time (ps) between the samples of a configuration's NVT and NVE runs
REPORT_PS = 0.1


@dataclass(frozen=True)
class StudyConfig:
    """One point of the study grid."""

    system: str
    embedding: str
    inner_fs: float
    k: int
    hmr: bool

    @property
    def key(self) -> str:
        return f"{self.system}/{self.embedding}/dt{self.inner_fs:g}fs/k{self.k}/{'hmr' if self.hmr else 'nohmr'}"


def degrees_of_freedom(system: openmm.System) -> int:
    """3N minus constraints minus 3 when a CMMotionRemover removes the centre-of-mass motion."""
    dof = 3 * sum(1 for i in range(system.getNumParticles()) if system.getParticleMass(i).value_in_unit(u.dalton) > 0)
    dof -= system.getNumConstraints()
    if any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces()):
        dof -= 3
    return dof


def check_lengths(nvt_ps: float, nve_ps: float, equilibration_ps: float, report_ps: float = REPORT_PS) -> None:
    """Raise :class:`InputError` unless the NVT run (ps) holds at least two samples ``report_ps``
    apart (a bond deviation needs two) and the NVE and equilibration lengths are >= 0."""
    problems = [f"nvt_ps (--nvt-length) = {nvt_ps} ps must be positive, e.g. 100 ps"] if not nvt_ps > 0 else []
    if nvt_ps > 0 and nvt_ps < 2 * report_ps * (1 - 1e-9):
        problems.append(f"nvt_ps (--nvt-length) = {nvt_ps} ps holds fewer than two samples, {report_ps:g} ps apart; "
                        f"give {2 * report_ps:g} ps or more")
    problems += [f"{name} ({option}) = {value} ps must be zero or positive" for name, option, value in
                 (("nve_ps", "--nve-length", nve_ps), ("equilibration_ps", "--equilibration", equilibration_ps))
                 if not value >= 0]
    if problems:
        raise InputError("; ".join(problems) + ".")


def region_free_bonds(molecular_system, region: np.ndarray, system: openmm.System) -> np.ndarray:
    """(n_bonds, 2) atom pairs of covalent bonds inside the region that are not constrained."""
    constrained = {tuple(sorted(system.getConstraintParameters(i)[:2])) for i in range(system.getNumConstraints())}
    inside = set(int(i) for i in region)
    pairs = []
    for bond in molecular_system.topology.bonds():
        pair = tuple(sorted((bond[0].index, bond[1].index)))
        if pair[0] in inside and pair[1] in inside and pair not in constrained:
            pairs.append(pair)
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def run_configuration(molecular_system, config: StudyConfig, nvt_ps: float, nve_ps: float,
                      model: str = "aimnet2", platform: str = "CPU", report_ps: float = REPORT_PS,
                      seed: int = 2024, equilibration_ps: float = 1.0, minimize_iterations: int = 100,
                      progress_path: str | Path | None = None, save_every_s: float = SAVE_EVERY_S,
                      progress: bool = False) -> dict:
    """Run one configuration and return its metrics (see :mod:`mlmm.stability`).

    After minimization, ``equilibration_ps`` of NVT with the same integrator is run and
    discarded before the measured NVT run of ``nvt_ps``; samples are taken every ``report_ps``.
    With ``progress_path`` the run saves its progress there (:mod:`mlmm.stability.progress`)
    every ``save_every_s`` wall seconds and when the NVT run ends, and continues from that
    file when it exists; the caller removes it once the row is stored. A continued row lists
    the times (ps into its NVT run, or NVT plus NVE) where it continued in ``continued_at_ps``.
    ``progress`` shows a bar of the simulated picoseconds (NVT, then NVE).
    """
    from tqdm.auto import tqdm

    from ..embedding.mixed import create_mixed_system

    check_lengths(nvt_ps, nve_ps, equilibration_ps, report_ps)
    mixed = create_mixed_system(molecular_system, model, "ligand", config.embedding)
    lengths = {"equilibration_ps": equilibration_ps, "nvt_ps": nvt_ps, "nve_ps": nve_ps}
    saved = load_progress(progress_path, config.key, lengths)
    run = _ConfigurationRun(mixed.system, config, platform, report_ps, saved, progress_path, save_every_s)
    bonds = region_free_bonds(molecular_system, mixed.region, mixed.system)
    n_nvt = max(1, round(nvt_ps / run.sample_ps))
    n_nve = max(2, round(nve_ps / run.sample_ps)) if nve_ps > 0 else 0
    result = {**asdict(config), "outer_fs": config.inner_fs * config.k, **lengths, "stable": True, "failure": None}
    done = len(saved.temperatures_k) + len(saved.nve_total_energies_kj_per_mol)
    with tqdm(total=(n_nvt + n_nve) * run.sample_ps, initial=done * run.sample_ps, desc=config.key, leave=False,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} ps [{elapsed}<{remaining}]",
              disable=not progress) as run.bar:
        try:
            if saved.stage != "nve":
                run.nvt(molecular_system.positions, seed, minimize_iterations, equilibration_ps, n_nvt, bonds)
            if n_nve:
                run.nve(n_nve)
        except SimulationError as exc:
            result.update(stable=False, failure=str(exc))
    return {**result, **run.metrics(n_nvt, n_nve)}


class _ConfigurationRun:
    """The dynamics of one configuration: sampled every ``report_steps`` outer steps, saved as it goes."""

    def __init__(self, system: openmm.System, config: StudyConfig, platform: str, report_ps: float,
                 progress: ConfigurationProgress, progress_path, save_every_s: float):
        self.system, self.config, self.platform = system, config, platform
        self.inner_ps = config.inner_fs * 1e-3
        self.report_steps = max(1, round(report_ps / (self.inner_ps * config.k)))
        self.sample_ps = self.report_steps * self.inner_ps * config.k
        self.dof = degrees_of_freedom(system)
        self.limit = EXPLOSION_KJ_PER_MOL_PER_ATOM * system.getNumParticles()
        self.progress, self.progress_path, self.save_every_s = progress, progress_path, save_every_s
        self.saved_at = time.monotonic()
        self.bar = None  # a tqdm bar of simulated ps, set by run_configuration

    def _context(self, ensemble: str, seed: int | None = None) -> tuple[openmm.Context, TorchThreadTuner]:
        """A Context for ``ensemble`` and the tuner that steps its dynamics (:mod:`mlmm.threads`)."""
        integrator = make_integrator(TEMPERATURE_K, 1.0, self.inner_ps, self.config.k, ensemble, seed)
        context = openmm.Context(self.system, integrator, get_platform(self.platform))
        return context, torch_thread_tuner(context)

    def _advance(self, context: openmm.Context, threads: TorchThreadTuner, stage: str,
                 **state_fields) -> openmm.State:
        """One sample interval of dynamics; the state after it, checked for NaN and explosions."""
        with unoptimized_torchscript(self.platform):
            try:
                threads.step(context.getIntegrator(), self.report_steps)
            except openmm.OpenMMException as exc:
                raise SimulationError(f"{stage}: {str(exc).split('.')[0]}") from None
            state = context.getState(getEnergy=True, **state_fields)
        energy = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        if not math.isfinite(energy):
            raise SimulationError(f"{stage}: potential energy became {energy}")
        if abs(energy) > self.limit and energy > 0:
            raise SimulationError(f"{stage}: potential energy exploded to {energy:.3g} kJ/mol")
        return state

    def _sampled(self, context: openmm.Context) -> None:
        """After each NVT or NVE sample: advance the bar, save when due."""
        self.bar.update(self.sample_ps)
        if self.progress_path is not None and time.monotonic() - self.saved_at >= self.save_every_s:
            self.progress.save(self.progress_path, context)
            self.saved_at = time.monotonic()

    def nvt(self, positions, seed: int, minimize_iterations: int, equilibration_ps: float, n_nvt: int,
            bonds: np.ndarray) -> None:
        """Minimize and equilibrate (unless continuing), then sample the NVT run (temperature, bond lengths)."""
        progress = self.progress
        done = len(progress.temperatures_k)
        context, threads = self._context("nvt", seed + done)  # a continued run draws new Langevin noise
        if progress.stage == "start":
            context.setPositions(positions)
            with unoptimized_torchscript(self.platform):
                openmm.LocalEnergyMinimizer.minimize(context, 10.0, minimize_iterations)
            context.setVelocitiesToTemperature(TEMPERATURE_K, seed)
            for _ in range(max(0, round(equilibration_ps / self.sample_ps))):
                self._advance(context, threads, "equilibration")
            progress.stage = "nvt"
        else:
            progress.restore(context)
            progress.continued_at_ps.append(done * self.sample_ps)
        clock = time.monotonic()
        for index in range(done, n_nvt):
            state = self._advance(context, threads, f"NVT at {index * self.sample_ps:.2f} ps", getPositions=True)
            # counted with each sample, so that a save holds the wall time of the samples it holds
            now = time.monotonic()
            progress.nvt_elapsed_s, clock = progress.nvt_elapsed_s + now - clock, now
            kinetic = state.getKineticEnergy().value_in_unit(u.kilojoule_per_mole)
            progress.temperatures_k.append(2.0 * kinetic / (self.dof * KB_KJ_PER_MOL_K))
            if len(bonds):
                xyz = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
                lengths = np.linalg.norm(xyz[bonds[:, 0]] - xyz[bonds[:, 1]], axis=1)
                progress.bond_lengths_nm.append(lengths.tolist())
            self._sampled(context)
        progress.stage = "nve"
        progress.save(self.progress_path, context)

    def nve(self, n_nve: int) -> None:
        """Velocity-Verlet RESPA from the end of the NVT run; total energy every sample (kJ/mol)."""
        progress = self.progress
        context, threads = self._context("nve")
        progress.restore(context)
        done = len(progress.nve_total_energies_kj_per_mol)
        if done:
            progress.continued_at_ps.append(len(progress.temperatures_k) * self.sample_ps + done * self.sample_ps)
        for _ in range(done, n_nve):
            state = self._advance(context, threads, "NVE")
            total = state.getPotentialEnergy() + state.getKineticEnergy()
            progress.nve_total_energies_kj_per_mol.append(total.value_in_unit(u.kilojoule_per_mole))
            self._sampled(context)

    def metrics(self, n_nvt: int, n_nve: int) -> dict:
        """The row's metrics from the samples taken (NaN where a stage did not run or did not finish)."""
        progress = self.progress
        temperatures = np.array(progress.temperatures_k)
        completed = len(temperatures) == n_nvt
        elapsed = progress.nvt_elapsed_s
        outer_steps = max(1, len(temperatures)) * self.report_steps
        lengths = np.array(progress.bond_lengths_nm)
        totals = np.array(progress.nve_total_energies_kj_per_mol)
        times_ns = self.sample_ps * 1e-3 * np.arange(1, len(totals) + 1)
        deviation = np.abs(lengths - lengths.mean(axis=0)) if lengths.size else np.array([math.nan])
        nve_finished = n_nve > 0 and len(totals) == n_nve
        return {
            "ms_per_outer_step": 1e3 * elapsed / outer_steps if completed else math.nan,
            "ns_per_day": self.sample_ps * 1e-3 * len(temperatures) / elapsed * 86400.0 if completed else math.nan,
            "temperature_k": float(temperatures.mean()) if len(temperatures) else math.nan,
            "temperature_std_k": float(temperatures.std()) if len(temperatures) else math.nan,
            "max_bond_deviation_nm": float(deviation.max()),
            "nve_drift": float(np.polyfit(times_ns, totals, 1)[0] / self.dof) if nve_finished else math.nan,
            **({"continued_at_ps": progress.continued_at_ps} if progress.continued_at_ps else {}),
        }


def study_grid(systems, embeddings, inner_fs, ks, hmr) -> list[StudyConfig]:
    """Every combination, ordered so that a system is built once per HMR setting."""
    return [StudyConfig(s, e, float(dt), int(k), bool(h))
            for s, h, e, dt, k in itertools.product(systems, hmr, embeddings, inner_fs, ks)]


def progress_folder_of(json_path: str | Path) -> Path:
    """Where a study writing ``json_path`` saves its configurations in progress: ``<json>.progress/``."""
    json_path = Path(json_path)
    return json_path.parent / f"{json_path.name}.progress"


def progress_path_of(json_path: str | Path, config: StudyConfig) -> Path:
    """The saved progress of ``config`` in a study writing ``json_path``: ``<json>.progress/<key>.json``."""
    return progress_folder_of(json_path) / (config.key.replace("/", "_") + ".json")


def run_study(configs: list[StudyConfig], build, json_path: str | Path, nvt_ps: float, nve_ps: float,
              platform: str = "CPU", progress: bool = True, equilibration_ps: float = 1.0,
              save_every_s: float = SAVE_EVERY_S) -> list[dict]:
    """Run every configuration not yet in ``json_path``; ``build(system_name, hmr)`` returns a MolecularSystem.

    Each finished row is added to ``json_path`` atomically; a configuration in progress is
    saved beside it (:func:`progress_path_of`) and continued by the next call after a kill.
    """
    from tqdm.auto import tqdm

    # bad lengths or an unknown platform fail here, before any system is built
    check_lengths(nvt_ps, nve_ps, equilibration_ps)
    get_platform(platform)
    json_path = Path(json_path)
    results = load_results(json_path) if json_path.exists() else {}
    lengths = {"equilibration_ps": equilibration_ps, "nvt_ps": nvt_ps, "nve_ps": nve_ps}
    for key, row in results.items():  # one file, one set of lengths: its table compares like with like
        check_resumable(key, row, lengths, json_path)
    for config in configs:
        if config.key in results:
            remove_progress(progress_path_of(json_path, config))  # left by a kill after the row was stored
    systems = {}
    todo = [c for c in configs if c.key not in results]
    for config in tqdm(todo, desc="stability study", unit="run", disable=not progress):
        cache_key = (config.system, config.hmr)
        if cache_key not in systems:
            systems.clear()
            systems[cache_key] = build(config.system, config.hmr)
        progress_path = progress_path_of(json_path, config)
        results[config.key] = run_configuration(systems[cache_key], config, nvt_ps, nve_ps, platform=platform,
                                                equilibration_ps=equilibration_ps, progress_path=progress_path,
                                                save_every_s=save_every_s, progress=progress)
        write_text_atomic(json_path, json.dumps(results, indent=1))
        remove_progress(progress_path)
    folder = progress_folder_of(json_path)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return [results[c.key] for c in configs if c.key in results]
