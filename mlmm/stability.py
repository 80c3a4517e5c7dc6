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

Results are appended to a JSON file as each configuration finishes, so an interrupted study
resumes where it stopped (a configuration already in the file is taken only when it was run
with the lengths asked for: rows of other lengths are refused rather than mixed);
:func:`merge_results` joins the files of studies run side by side; :func:`markdown_table` renders them for the README and :func:`plot` draws bond
deviation and NVE drift against the outer time step.
"""

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

from .atomic_io import write_text_atomic
from .figures import new_figure, save_figure
from .errors import InputError, SimulationError
from .splitting import make_integrator
from .threads import configure_torch_threads
from .units import KB_KJ_PER_MOL_K

TEMPERATURE_K = 300.0
#: a potential energy above this (kJ/mol per atom) counts as an explosion
EXPLOSION_KJ_PER_MOL_PER_ATOM = 1.0e3


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
                      model: str = "aimnet2", platform: str = "CPU", report_ps: float = 0.1,
                      seed: int = 2024, equilibration_ps: float = 1.0, minimize_iterations: int = 100) -> dict:
    """Run one configuration and return its metrics (see the module docstring).

    After minimization, ``equilibration_ps`` of NVT with the same integrator is run and
    discarded before the measured NVT run of ``nvt_ps``.
    """
    from .embedding.mixed import create_mixed_system

    mixed = create_mixed_system(molecular_system, model, "ligand", config.embedding)
    system = mixed.system
    inner_ps = config.inner_fs * 1e-3
    outer_ps = inner_ps * config.k
    report_steps = max(1, round(report_ps / outer_ps))
    n_report = max(1, round(nvt_ps / (report_steps * outer_ps)))
    bonds = region_free_bonds(molecular_system, mixed.region, system)
    dof = degrees_of_freedom(system)
    limit = EXPLOSION_KJ_PER_MOL_PER_ATOM * system.getNumParticles()
    result = {**asdict(config), "outer_fs": config.inner_fs * config.k, "equilibration_ps": equilibration_ps,
              "nvt_ps": nvt_ps, "nve_ps": nve_ps,
              "stable": True, "failure": None}

    platform_object = openmm.Platform.getPlatformByName(platform)
    integrator = make_integrator(TEMPERATURE_K, 1.0, inner_ps, config.k, "nvt", seed)
    context = openmm.Context(system, integrator, platform_object)
    configure_torch_threads(platform)
    context.setPositions(molecular_system.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, minimize_iterations)
    context.setVelocitiesToTemperature(TEMPERATURE_K, seed)

    temperatures, lengths = [], []
    try:
        for _ in range(max(0, round(equilibration_ps / (report_steps * outer_ps)))):
            _advance(integrator, report_steps, "equilibration")
            _check(context.getState(getEnergy=True), limit, "equilibration")
    except SimulationError as exc:
        result.update(stable=False, failure=str(exc))
        n_report = 0
    started = time.perf_counter()
    try:
        for index in range(n_report):
            stage = f"NVT at {index * report_steps * outer_ps:.2f} ps"
            _advance(integrator, report_steps, stage)
            state = context.getState(getEnergy=True, getPositions=True)
            _check(state, limit, stage)
            temperatures.append(2.0 * state.getKineticEnergy().value_in_unit(u.kilojoule_per_mole) / (dof * KB_KJ_PER_MOL_K))
            if len(bonds):
                xyz = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
                lengths.append(np.linalg.norm(xyz[bonds[:, 0]] - xyz[bonds[:, 1]], axis=1))
    except SimulationError as exc:
        result.update(stable=False, failure=str(exc))
    elapsed = time.perf_counter() - started
    steps_done = max(1, len(temperatures)) * report_steps
    result["ms_per_outer_step"] = 1e3 * elapsed / steps_done if result["stable"] else math.nan
    result["ns_per_day"] = outer_ps * 1e-3 * steps_done / elapsed * 86400.0 if result["stable"] else math.nan
    result["temperature_k"] = float(np.mean(temperatures)) if temperatures else math.nan
    result["temperature_std_k"] = float(np.std(temperatures)) if temperatures else math.nan
    if lengths:
        lengths = np.array(lengths)
        result["max_bond_deviation_nm"] = float(np.max(np.abs(lengths - lengths.mean(axis=0))))
    else:
        result["max_bond_deviation_nm"] = math.nan
    result["nve_drift"] = math.nan
    if result["stable"] and nve_ps > 0:
        try:
            result["nve_drift"] = _nve_drift(system, context.getState(getPositions=True, getVelocities=True),
                                             platform_object, inner_ps, config.k, nve_ps, report_steps, dof, limit)
        except SimulationError as exc:
            result.update(stable=False, failure=str(exc))
    return result


def _nve_drift(system, start_state, platform_object, inner_ps, k, nve_ps, report_steps, dof, limit) -> float:
    """Slope of the total energy in NVE, kJ/mol per ns per degree of freedom."""
    integrator = make_integrator(inner_timestep=inner_ps, mts_factor=k, ensemble="nve")
    context = openmm.Context(system, integrator, platform_object)
    context.setState(start_state)
    outer_ps = inner_ps * k
    times, totals = [], []
    for index in range(max(2, round(nve_ps / (report_steps * outer_ps)))):
        _advance(integrator, report_steps, "NVE")
        state = context.getState(getEnergy=True)
        _check(state, limit, "NVE")
        totals.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(u.kilojoule_per_mole))
        times.append((index + 1) * report_steps * outer_ps * 1e-3)  # ns
    slope = np.polyfit(np.array(times), np.array(totals), 1)[0]
    return float(slope / dof)


def _advance(integrator: openmm.Integrator, steps: int, stage: str) -> None:
    """``integrator.step(steps)``, with OpenMM's NaN exception turned into a :class:`SimulationError`."""
    try:
        integrator.step(steps)
    except openmm.OpenMMException as exc:
        raise SimulationError(f"{stage}: {str(exc).split('.')[0]}") from None


def _check(state: openmm.State, limit: float, stage: str) -> None:
    energy = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    if not math.isfinite(energy):
        raise SimulationError(f"{stage}: potential energy became {energy}")
    if abs(energy) > limit and energy > 0:
        raise SimulationError(f"{stage}: potential energy exploded to {energy:.3g} kJ/mol")


def study_grid(systems, embeddings, inner_fs, ks, hmr) -> list[StudyConfig]:
    """Every combination, ordered so that a system is built once per HMR setting."""
    return [StudyConfig(s, e, float(dt), int(k), bool(h))
            for s, h, e, dt, k in itertools.product(systems, hmr, embeddings, inner_fs, ks)]


def run_study(configs: list[StudyConfig], build, json_path: str | Path, nvt_ps: float, nve_ps: float,
              platform: str = "CPU", progress: bool = True, equilibration_ps: float = 1.0) -> list[dict]:
    """Run every configuration not yet in ``json_path``; ``build(system_name, hmr)`` returns a MolecularSystem."""
    from tqdm.auto import tqdm

    json_path = Path(json_path)
    results = load_results(json_path) if json_path.exists() else {}
    lengths = {"equilibration_ps": equilibration_ps, "nvt_ps": nvt_ps, "nve_ps": nve_ps}
    for config in configs:
        if config.key in results:
            _check_lengths(config.key, results[config.key], lengths, json_path)
    systems = {}
    todo = [c for c in configs if c.key not in results]
    for config in tqdm(todo, desc="stability study", unit="run", disable=not progress):
        cache_key = (config.system, config.hmr)
        if cache_key not in systems:
            systems.clear()
            systems[cache_key] = build(config.system, config.hmr)
        results[config.key] = run_configuration(systems[cache_key], config, nvt_ps, nve_ps, platform=platform,
                                                equilibration_ps=equilibration_ps)
        write_text_atomic(json_path, json.dumps(results, indent=1))
    return [results[c.key] for c in configs if c.key in results]


LENGTH_KEYS = ("equilibration_ps", "nvt_ps", "nve_ps")


def load_results(path: str | Path) -> dict:
    """The rows of a results file written by :func:`run_study`, by configuration key."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such stability results file.") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not a stability results file (invalid JSON: {exc}).") from None
    if not isinstance(results, dict) or not all(isinstance(r, dict) and "stable" in r for r in results.values()):
        raise InputError(f"{path} is not a stability results file: expected the JSON object that "
                         "`mlmm stability --json` writes, configuration key -> row.")
    return results


def _lengths(row: dict) -> dict:
    return {key: row.get(key) for key in LENGTH_KEYS}


def _same_lengths(a: dict, b: dict) -> bool:
    return all(a[key] is not None and b[key] is not None and math.isclose(a[key], b[key]) for key in LENGTH_KEYS)


def _shown_lengths(lengths: dict) -> str:
    return ", ".join(f"{key} {lengths[key]}" for key in LENGTH_KEYS)


def _check_lengths(key: str, row: dict, lengths: dict, path: Path) -> None:
    """Refuse to resume a row that was run with other equilibration, NVT or NVE lengths (ps)."""
    if not _same_lengths(_lengths(row), lengths):
        raise InputError(
            f"{path} already holds {key} run with {_shown_lengths(_lengths(row))}, but this study asks for {_shown_lengths(lengths)}. "
            "Give another --json file, or the same lengths, so that rows of different lengths are not mixed.")


def merge_results(paths: list[str | Path]) -> dict:
    """Join results files, in order; a configuration found in two files must have the same lengths.

    Two rows of one configuration with the same lengths come from the same seeded run, so
    the later file's row is kept.
    """
    merged, origin = {}, {}
    for path in paths:
        for key, row in load_results(path).items():
            if key in merged and not _same_lengths(_lengths(row), _lengths(merged[key])):
                raise InputError(
                    f"{key} is in {origin[key]} with {_shown_lengths(_lengths(merged[key]))} and in {path} with "
                    f"{_shown_lengths(_lengths(row))}: merge only files of one set of run lengths.")
            merged[key], origin[key] = row, path
    return merged


def markdown_table(results: list[dict]) -> str:
    """The study as a Markdown table."""
    header = ("| system | embedding | HMR | inner (fs) | k | outer (fs) | stable | T (K) | max bond dev. (pm) "
              "| NVE drift (kJ/mol/ns/dof) | ns/day |\n|" + "---|" * 11)
    rows = [header]
    def shown(value, fmt):
        return "-" if value is None or not math.isfinite(value) else format(value, fmt)

    for r in results:
        stability = "yes" if r["stable"] else f"no ({r['failure']})"
        rows.append(
            f"| {r['system']} | {r['embedding']} | {'yes' if r['hmr'] else 'no'} | {r['inner_fs']:g} | {r['k']} "
            f"| {r['outer_fs']:g} | {stability} | {shown(r['temperature_k'], '.1f')} "
            f"| {shown(1e3 * r['max_bond_deviation_nm'], '.1f')} | {shown(r['nve_drift'], '.3g')} "
            f"| {shown(r['ns_per_day'] if r['stable'] else math.nan, '.2f')} |"
        )
    return "\n".join(rows) + "\n"


def plot(results: list[dict], path: str | Path) -> None:
    """Largest region bond deviation (pm) and NVE drift against the outer step (fs); written atomically.

    One column per system; one line per (embedding, inner step, HMR). Unstable
    configurations are red crosses at the bond deviation reached before they failed (or at
    the top of the panel when none was measured); the deviation axis is logarithmic. The
    image format follows the suffix of ``path`` (png, pdf, svg, ...).
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    systems = list(dict.fromkeys(r["system"] for r in results))
    fig, axes = new_figure(2, len(systems), figsize=(5.2 * len(systems), 6.4), squeeze=False, sharex="col")
    for column, system in enumerate(systems):
        bond_axis, drift_axis = axes[0, column], axes[1, column]
        rows = [r for r in results if r["system"] == system]
        measured = [1e3 * r["max_bond_deviation_nm"] for r in rows if math.isfinite(r["max_bond_deviation_nm"])]
        top = 1.15 * max(measured, default=10.0)
        series = dict.fromkeys((r["embedding"], r["inner_fs"], r["hmr"]) for r in rows)
        for embedding, inner_fs, hmr in series:
            points = sorted((r for r in rows if (r["embedding"], r["inner_fs"], r["hmr"]) == (embedding, inner_fs, hmr)),
                            key=lambda r: r["outer_fs"])
            stable = [r for r in points if r["stable"]]
            label = f"{embedding}, {inner_fs:g} fs inner{', HMR' if hmr else ''}"
            line, = bond_axis.plot([r["outer_fs"] for r in stable], [1e3 * r["max_bond_deviation_nm"] for r in stable],
                                   "o-", label=label)
            drift_axis.plot([r["outer_fs"] for r in stable], [r["nve_drift"] for r in stable], "o-",
                            color=line.get_color())
            failed = [r for r in points if not r["stable"]]
            bond_axis.plot([r["outer_fs"] for r in failed],
                           [1e3 * r["max_bond_deviation_nm"] if math.isfinite(r["max_bond_deviation_nm"]) else top
                            for r in failed], "x", color="#c44e52", markersize=9, markeredgewidth=2)
        bond_axis.set_yscale("log")  # stable rows deviate by ~5-10 pm, failing ones by up to ~100s
        bond_axis.set_ylim(0.5 * min(measured, default=1.0), 1.5 * top)
        bond_axis.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        bond_axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        bond_axis.yaxis.set_minor_formatter(NullFormatter())
        bond_axis.set_title(f"{system} (x: unstable)", fontsize=10)
        bond_axis.set_ylabel("largest bond deviation (pm)")
        bond_axis.legend(fontsize=7)
        drift_axis.axhline(0.0, color="#8c8c8c", linewidth=0.8)
        drift_axis.set_ylabel("NVE drift (kJ/mol/ns/dof)")
        drift_axis.set_xlabel("outer time step (fs)")
    fig.tight_layout()
    save_figure(fig, path)
