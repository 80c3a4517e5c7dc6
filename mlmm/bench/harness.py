"""Benchmark one molecular system: MM, ML/MM every step, ML/MM with MTS, host-copy ML/MM, bare model.

Rows (:data:`ROWS`), all on the same system, platform, thread settings and starting state:

- ``mm``: the MM force field alone, ``LangevinMiddleIntegrator`` at the inner time step;
- ``torchforce``: ML/MM (:func:`mlmm.embedding.create_mixed_system`, mechanical embedding
  unless ``embedding`` says otherwise), the TorchForce and the MM force field every inner
  step (k = 1);
- ``mts``: the same System with difference splitting, the ML correction every
  ``mts_factor`` inner steps (:func:`mlmm.splitting.make_integrator`: native LangevinMiddle inner steps;
  k and the inner step default to mlmm's run defaults, :data:`mlmm.splitting.DEFAULT_MTS_FACTOR`
  and :data:`~mlmm.splitting.DEFAULT_INNER_TIMESTEP_FS`);
- ``pythonforce``: the same physics with the ML energy through ``openmm.PythonForce`` and host
  copies each step (:mod:`mlmm.bench.host_copy`), k = 1; mechanical embedding only, like
  openmm-ml, so it is left out of the default rows of the other embeddings;
- ``model``: the bare region model, energy and forces, outside OpenMM (for the electrostatic
  and polarizable embeddings without the coupling to the MM charges, which the TorchForce
  adds: see :func:`_ratios`). Each call follows an untimed MM force evaluation of the
  system, as the ML force follows the MM forces in a run, so that it finds the caches as
  they are in the dynamics rows (on T4L-toluene a call timed after another call is about
  1 ms, 13 %, faster).

The rows are timed in interleaved rounds (every row once per round, ``repeats`` rounds) so a
change of machine load during the run affects all rows alike; each row reports the median.
``ms_per_step`` is wall time per *inner* step (2 fs by default) for every dynamics row (for
``mts`` the outer step's time divided by k) and per call for ``model``; ``ns_per_day``
follows from it and the inner time step. For ``model`` it is the rate a simulation would
reach if each inner step cost one model call and nothing else. ``cpu_ms_per_step`` is the
CPU time of the process (all threads) per inner step: on a shared machine it shows the work
done when the wall time is stretched by waiting for a core.

Also measured, once per system: the time of one evaluation of each part of the ML/MM System
(``breakdown``: MM force field, ML TorchForce, MMRegion subtraction, and the bare model call
timed in the same interleaved rounds, so the TorchForce's own overhead is a difference of
measurements taken side by side), and the agreement of the TorchForce and PythonForce paths
on energy and forces (``consistency``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as u
import torch

from .. import forcegroups
from ..embedding import EMBEDDINGS
from ..errors import InputError, SimulationError
from ..molecular_system import MolecularSystem
from ..platforms import GPU_PLATFORMS, available_platforms, get_platform, platform_problem
from ..splitting import DEFAULT_INNER_TIMESTEP_FS, DEFAULT_MTS_FACTOR, assign_force_groups, make_integrator
from ..threads import AUTO, TorchThreadTuner, torch_thread_tuner
from ..torchscript_execution import unoptimized_torchscript
from . import timing
from .host_copy import HOST_COPY_EMBEDDINGS, create_host_copy_system

#: every row, in the order they are timed and shown
ROWS = ("mm", "torchforce", "mts", "pythonforce", "model")
#: the systems benchmarked by default, recipes in the repository's systems/ folder
DEFAULT_SYSTEMS = ("toluene-water", "t4l-toluene")
SYSTEMS_FOLDER = Path(__file__).resolve().parents[2] / "systems"
_MS_PER_DAY = 86_400_000.0


@dataclass
class BenchmarkSettings:
    """What to measure and how. Units: ps, K, 1/ps.

    ``steps`` inner steps per timed block of every dynamics row (MTS: ``steps / mts_factor``
    outer steps, rounded up), ``steps`` calls per block of the model row; ``repeats`` blocks
    per row; ``warmup`` inner steps (and model calls) before timing, which also absorb the
    TorchScript profiling runs. ``threads``: OpenMM CPU threads (None: OpenMM's default, all
    cores); ``torch_threads``: PyTorch intra-op threads during the run, a count, ``"auto"``
    (the default: after the warm-up a probe of the ML/MM dynamics picks the fastest count,
    as ``mlmm run`` does, see :mod:`mlmm.threads`; the ``mts`` row's timed blocks step
    through the same tuner, so any later probe is part of its time) or None (left as they
    are).
    """

    steps: int = 20
    repeats: int = 5
    warmup: int = 10
    mts_factor: int = DEFAULT_MTS_FACTOR
    inner_timestep: float = DEFAULT_INNER_TIMESTEP_FS * 1e-3
    temperature: float = 300.0
    friction: float = 1.0
    platform: str | None = None  # None: CUDA when present, else CPU
    threads: int | None = None
    torch_threads: int | str | None = AUTO
    model: str = "aimnet2"
    model_options: dict = field(default_factory=dict)
    region: str = "ligand"
    embedding: str = "mechanical"
    rows: tuple[str, ...] | None = None  # None: every row the embedding allows (default_rows)
    minimize_iterations: int = 200
    seed: int = 2024

    def __post_init__(self):
        if self.rows is None:
            self.rows = default_rows(self.embedding)

    def validate(self) -> "BenchmarkSettings":
        problems = []
        for name in ("steps", "repeats", "mts_factor"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                problems.append(f"{name} = {value!r} must be an integer >= 1")
        for name in ("warmup", "minimize_iterations"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                problems.append(f"{name} = {value!r} must be an integer >= 0")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            problems.append(f"threads = {self.threads!r} must be an integer >= 1 or None")
        if self.torch_threads not in (None, AUTO) and (not isinstance(self.torch_threads, int) or self.torch_threads < 1):
            problems.append(f"torch_threads = {self.torch_threads!r} must be an integer >= 1, {AUTO!r} or None")
        if not isinstance(self.model_options, dict):
            problems.append(f"model_options = {self.model_options!r} must be a dict of the plugin's options")
        unknown = [row for row in self.rows if row not in ROWS]
        if unknown or not self.rows:
            problems.append(f"rows {list(self.rows)!r}: choose one or more of {', '.join(ROWS)}")
        if self.embedding not in EMBEDDINGS:
            problems.append(f"embedding = {self.embedding!r} is unknown; choose one of {', '.join(EMBEDDINGS)}")
        elif "pythonforce" in self.rows and self.embedding not in HOST_COPY_EMBEDDINGS:
            problems.append(f"the pythonforce row (the host-copy path, as openmm-ml) has "
                            f"{' and '.join(HOST_COPY_EMBEDDINGS)} embedding only, not {self.embedding}; leave it "
                            f"out (rows {' '.join(default_rows(self.embedding))}) or benchmark the mechanical embedding")
        if not self.inner_timestep > 0:
            problems.append(f"inner_timestep = {self.inner_timestep} ps must be positive")
        if self.platform is not None and (problem := platform_problem(self.platform)):
            problems.append(problem.rstrip("."))
        if problems:
            raise InputError("invalid benchmark settings: " + "; ".join(problems) + ".")
        return self

    @property
    def platform_name(self) -> str:
        if self.platform is not None:
            return self.platform
        return "CUDA" if "CUDA" in available_platforms() else "CPU"

    def platform_properties(self) -> dict[str, str]:
        name = self.platform_name
        if name == "CPU" and self.threads is not None:
            return {"Threads": str(self.threads)}
        if name in GPU_PLATFORMS:
            return {"Precision": "mixed"}
        return {}


def default_rows(embedding: str) -> tuple[str, ...]:
    """Every row of :data:`ROWS` that can run with ``embedding`` (no ``pythonforce`` beyond mechanical)."""
    return tuple(row for row in ROWS if row != "pythonforce" or embedding in HOST_COPY_EMBEDDINGS)


def ns_per_day(ms_per_inner_step: float, inner_timestep_ps: float) -> float:
    """Simulated ns per day of wall time at ``ms_per_inner_step`` ms per inner step of ``inner_timestep_ps`` ps."""
    return inner_timestep_ps * 1e-3 * _MS_PER_DAY / ms_per_inner_step


def resolve_system(spec: str | Path, progress: bool = False) -> tuple[str, MolecularSystem]:
    """Name and MolecularSystem of ``spec``.

    ``spec`` is a recipe name in the repository's systems/ folder (``toluene-water``, built
    here), a recipe file or a saved system folder (``mlmm build``).
    """
    from ..running.setup import load_input

    path = Path(spec)
    recipe = SYSTEMS_FOLDER / f"{spec}.yaml"
    if not path.exists() and recipe.is_file():
        from ..building import build_from_recipe

        return str(spec), build_from_recipe(recipe, progress=progress)
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in SYSTEMS_FOLDER.glob("*.yaml"))) or "none found"
        raise InputError(f"system {str(spec)!r} is neither a recipe name in {SYSTEMS_FOLDER} ({known}) nor an existing "
                         "recipe file or saved system folder (mlmm build).")
    name = path.stem if path.is_file() else path.name
    return name, load_input(path)


@contextlib.contextmanager
def torch_threads(count: int | str | None):
    """Run the block with ``count`` PyTorch intra-op threads (unchanged when None or ``"auto"``), then restore them."""
    before = torch.get_num_threads()
    if isinstance(count, int):
        torch.set_num_threads(int(count))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class SystemBenchmark:
    """Everything measured on one system; :meth:`to_dict` is its entry in the JSON report."""

    name: str
    n_atoms: int
    region_atoms: int
    platform: str
    rows: dict[str, dict] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)
    ratios_cpu: dict[str, float | None] = field(default_factory=dict)
    breakdown_ms_per_evaluation: dict[str, float] = field(default_factory=dict)
    breakdown_cpu_ms_per_evaluation: dict[str, float] = field(default_factory=dict)
    consistency: dict[str, float] = field(default_factory=dict)
    torch_threads: dict = field(default_factory=dict)  # setting, the count used at the end, each probe

    def to_dict(self) -> dict:
        return asdict(self)


class _Row:
    """One dynamics row: its Context and how many integrator steps make one timed block."""

    def __init__(self, context: openmm.Context, steps_per_block: int, inner_steps_per_step: int):
        self.context = context
        self.steps_per_block = steps_per_block
        self.inner_steps_per_step = inner_steps_per_step

    def time_block(self, advance=None) -> timing.Timing:
        """Time per inner step over one block, stepped by ``advance(integrator, steps)`` if given."""
        per_step = timing.time_steps(self.context, self.steps_per_block, advance)
        return timing.Timing(*(value / self.inner_steps_per_step for value in per_step))


def benchmark_system(molecular_system: MolecularSystem, settings: BenchmarkSettings, name: str = "system",
                     progress=None) -> SystemBenchmark:
    """Time every row of ``settings.rows`` on ``molecular_system`` and return the measurements.

    ``progress`` is an optional tqdm bar; it advances once per timed block.
    """
    settings.validate()
    say = progress.set_postfix_str if progress is not None else (lambda text: None)
    platform = get_platform(settings.platform_name)
    properties = settings.platform_properties()

    needs_ml = any(row != "mm" for row in settings.rows)
    mixed = _mixed_system(molecular_system, settings) if needs_ml else None  # first: bad model options fail fast
    say("minimizing (MM)")
    positions = _minimized_positions(molecular_system, platform, properties, settings.minimize_iterations)
    result = SystemBenchmark(name, molecular_system.n_atoms, int(len(mixed.region)) if mixed else 0, platform.getName())

    samples, result.consistency, threads = _time_rows(molecular_system, mixed, positions, platform, properties,
                                                      settings, name, progress)
    result.torch_threads = {"setting": settings.torch_threads, "used_at_end": threads.threads,
                            "probes": [asdict(probe) for probe in threads.probes]}
    k = settings.mts_factor
    for row in settings.rows:
        value = timing.median(sample.wall_ms for sample in samples[row])
        entry = {"ms_per_step": value, "ns_per_day": ns_per_day(value, settings.inner_timestep),
                 "cpu_ms_per_step": timing.median(sample.cpu_ms for sample in samples[row]),
                 "samples_ms_per_step": [sample.wall_ms for sample in samples[row]]}
        if row == "mts":
            entry.update(mts_factor=k, ms_per_outer_step=value * k)
        if row == "model":
            entry["ms_per_call"] = value
        result.rows[row] = entry

    if mixed is not None:
        say("timing the parts of the ML/MM force field")
        result.breakdown_ms_per_evaluation, result.breakdown_cpu_ms_per_evaluation = _breakdown(
            mixed, positions, platform, properties, settings)
    result.ratios = _ratios(result.rows, result.breakdown_ms_per_evaluation)
    result.ratios_cpu = _ratios(result.rows, result.breakdown_cpu_ms_per_evaluation, key="cpu_ms_per_step")
    return result


def _time_rows(molecular_system, mixed, positions, platform, properties, settings, name, progress):
    """Create each row's Context, compare the two ML paths, warm up, then time interleaved rounds.

    Returns the timings of every row (one :class:`~mlmm.bench.timing.Timing` per round), the
    TorchForce/PythonForce comparison (empty unless both rows are timed) and PyTorch's thread
    tuner (:func:`_settled_thread_tuner`). The Contexts are freed on return.
    """
    say = progress.set_postfix_str if progress is not None else (lambda text: None)
    device = _device(platform)

    def context(system, mts_factor):
        integrator = make_integrator(settings.temperature, settings.friction, settings.inner_timestep, mts_factor,
                                     seed=settings.seed)
        ctx = openmm.Context(system, integrator, platform, properties)
        ctx.setPositions(positions)
        if system.usesPeriodicBoundaryConditions():
            ctx.setPeriodicBoxVectors(*system.getDefaultPeriodicBoxVectors())
        ctx.setVelocitiesToTemperature(settings.temperature, settings.seed)
        return ctx

    k = settings.mts_factor
    rows: dict[str, _Row] = {}
    say("creating contexts")
    for row in settings.rows:
        if row == "mm":
            rows[row] = _Row(context(assign_force_groups(copy.deepcopy(molecular_system.system)), 1), settings.steps, 1)
        elif row == "torchforce":
            rows[row] = _Row(context(mixed.system, 1), settings.steps, 1)
        elif row == "mts":
            rows[row] = _Row(context(mixed.system, k), math.ceil(settings.steps / k), k)
        elif row == "pythonforce":
            host_system = create_host_copy_system(
                _mixed_system(molecular_system, settings), device)
            rows[row] = _Row(context(host_system, 1), settings.steps, 1)

    consistency = {}
    if "torchforce" in rows and "pythonforce" in rows:
        say("comparing TorchForce and PythonForce")
        consistency = compare_forces(rows["torchforce"].context, rows["pythonforce"].context)

    region_positions = after_mm = mm_context = None
    if "model" in settings.rows:
        region_positions = _whole_region_positions(mixed, positions, device)
        mixed.region_model.to(device)
        mm_context = context(copy.deepcopy(molecular_system.system), 1)
        after_mm = functools.partial(timing.evaluate, mm_context)

    with unoptimized_torchscript(platform.getName()):  # as the dynamics of mlmm run and mlmm fe run
        say("warming up")
        for row_name, row in rows.items():
            with _dynamics_of(row_name, name):
                row.context.getIntegrator().step(max(1, math.ceil(settings.warmup / row.inner_steps_per_step)))
                timing.finish(row.context)
        if region_positions is not None:
            for _ in range(max(settings.warmup, 3)):
                timing.model_call(mixed.region_model, region_positions)
        say("choosing PyTorch's threads")
        threads, probed = _settled_thread_tuner(rows, mm_context, settings, name)

        samples: dict[str, list[timing.Timing]] = {row: [] for row in settings.rows}
        for repeat in range(settings.repeats):
            for row in settings.rows:
                say(f"round {repeat + 1}/{settings.repeats}: {row}")
                threads.apply()
                if row == "model":
                    samples[row].append(timing.time_model_calls(mixed.region_model, region_positions, settings.steps,
                                                                before=after_mm))
                else:
                    with _dynamics_of(row, name):
                        samples[row].append(rows[row].time_block(threads.step if row == probed else None))
                if progress is not None:
                    progress.update(1)
    for row, timed in rows.items():
        _check_finite(timed.context, row, name)
    return samples, consistency, threads


#: the dynamics rows whose speed depends on PyTorch's threads, in the order one is picked to probe
_ML_DYNAMICS_ROWS = ("mts", "torchforce", "pythonforce")


def _settled_thread_tuner(rows: dict, mm_context, settings: BenchmarkSettings,
                          name: str) -> tuple[TorchThreadTuner, str | None]:
    """PyTorch's thread tuner for the timed rounds and the row it steps (None without an ML/MM dynamics row).

    With a choice of counts (``torch_threads="auto"`` on the CPU platform) it is settled by a
    whole probe of that row's dynamics, the first of :data:`_ML_DYNAMICS_ROWS` timed; every
    row then runs with the chosen count, and that row's timed blocks step through the tuner
    as ``mlmm run`` does, later probes included.
    """
    requested = torch.get_num_threads() if settings.torch_threads is None else settings.torch_threads
    probed = next((row for row in _ML_DYNAMICS_ROWS if row in rows), None)
    context = rows[probed].context if probed else mm_context or next(iter(rows.values())).context
    tuner = torch_thread_tuner(context, requested)
    if probed is not None:
        with _dynamics_of(probed, name):
            tuner.tune(context.getIntegrator())
            timing.finish(context)
    return tuner, probed


def compare_forces(context_a: openmm.Context, context_b: openmm.Context,
                   groups: int = forcegroups.group_mask(forcegroups.ML_SLOW)) -> dict[str, float]:
    """Energy (kJ/mol) and force (kJ/mol/nm) differences of the force groups ``groups`` of two Contexts.

    Both are evaluated at ``context_a``'s positions and box; by default only the ML
    correction (group ``ML_SLOW``) is compared, where the two ML paths differ.
    """
    state = context_a.getState(getPositions=True, getEnergy=True, getForces=True, groups=groups)
    context_b.setPeriodicBoxVectors(*state.getPeriodicBoxVectors())
    context_b.setPositions(state.getPositions(asNumpy=True))
    other = context_b.getState(getEnergy=True, getForces=True, groups=groups)
    unit = u.kilojoule_per_mole / u.nanometer
    forces_a = state.getForces(asNumpy=True).value_in_unit(unit)
    forces_b = other.getForces(asNumpy=True).value_in_unit(unit)
    energy_a = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    energy_b = other.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    return {
        "energy_kj_mol": energy_a,
        "energy_difference_kj_mol": abs(energy_a - energy_b),
        "max_force_difference_kj_mol_nm": float(np.abs(forces_a - forces_b).max()),
        "max_force_kj_mol_nm": float(np.abs(forces_a).max()),
    }


def _mixed_system(molecular_system, settings: BenchmarkSettings):
    """ML/MM of ``molecular_system`` as the settings describe it (model, region, embedding)."""
    from ..embedding.mixed import create_mixed_system

    return create_mixed_system(molecular_system, settings.model, settings.region, embedding=settings.embedding,
                               model_options=settings.model_options)


def _minimized_positions(molecular_system, platform, properties, iterations: int) -> np.ndarray:
    """Positions (nm) after at most ``iterations`` steps of MM energy minimization (the built ones if 0)."""
    if iterations == 0:
        return molecular_system.positions
    system = copy.deepcopy(molecular_system.system)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform, properties)
    context.setPositions(molecular_system.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, iterations)
    return context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)


def _whole_region_positions(mixed, positions: np.ndarray, device: str) -> torch.Tensor:
    """The region's positions (nm, float64) made whole, as the TorchForce hands them to the model."""
    from ..torch_geometry import central_atom, make_whole

    region = torch.as_tensor(np.asarray(positions)[mixed.region], dtype=torch.float64)
    if mixed.molecular_system.is_periodic:
        anchor = central_atom(torch.as_tensor(mixed.molecular_system.positions[mixed.region]))
        region = make_whole(region, torch.as_tensor(mixed.molecular_system.box_vectors), anchor)
    return region.to(device)


def _device(platform: openmm.Platform) -> str:
    """The torch device a TorchForce uses on ``platform``."""
    return "cuda" if platform.getName() == "CUDA" else "cpu"


def ml_force_in_own_group(mixed) -> int:
    """Move the mixed System's ML TorchForce out of the slow group into a force group of its own; return it.

    Then the TorchForce and the MMRegion subtraction can be evaluated apart; the System is
    not fit for MTS dynamics afterwards (its slow group lacks the ML force).
    """
    from ..embedding.mixed import ML_FORCE_NAME

    ml_group = max(*forcegroups.MM_GROUPS, *forcegroups.SLOW_GROUPS) + 1
    for force in mixed.system.getForces():
        if force.getName() == ML_FORCE_NAME:
            force.setForceGroup(ml_group)
    return ml_group


def _breakdown(mixed, positions, platform, properties, settings) -> tuple[dict[str, float], dict[str, float]]:
    """Wall and CPU milliseconds per evaluation of: nothing, the MM force field, the ML TorchForce,
    MMRegion, and one bare model call (``model``), all timed in the same interleaved rounds.

    Each timed evaluation and call follows an untimed evaluation of the MM force field, as
    in a run, so that all five are compared in the same state of the caches. The mixed
    System's TorchForce is moved to a force group of its own for this; it is not used for
    dynamics afterwards.
    """
    from ..embedding.mixed import MM_REGION_FORCE_NAME

    groups = {"mm": forcegroups.MM_GROUPS, "ml_torchforce": (ml_force_in_own_group(mixed),),
              "mm_region": (forcegroups.ML_SLOW,)}
    has_region_force = any(f.getName() == MM_REGION_FORCE_NAME for f in mixed.system.getForces())
    context = openmm.Context(mixed.system, openmm.VerletIntegrator(0.001), platform, properties)
    context.setPositions(positions)
    masks = {"empty": 0, **{name: forcegroups.group_mask(*group) for name, group in groups.items()}}
    if not has_region_force:
        del masks["mm_region"]
    device = _device(platform)
    region_positions = _whole_region_positions(mixed, positions, device)
    mixed.region_model.to(device)
    with unoptimized_torchscript(platform.getName()):
        return _timed_breakdown(context, masks, mixed.region_model, region_positions, settings)


def _timed_breakdown(context, masks, region_model, region_positions, settings):
    """The interleaved rounds of :func:`_breakdown`: evaluations of the force groups in ``masks`` and model calls."""
    evaluations = max(3, settings.steps // 10)
    for mask in masks.values():
        timing.time_evaluations(context, mask, 2)  # warm-up
    timing.time_model_calls(region_model, region_positions, 2)
    samples = {name: [] for name in (*masks, "model")}
    after_mm = functools.partial(timing.evaluate, context, masks["mm"])
    for _ in range(settings.repeats):
        for name, mask in masks.items():
            samples[name].append(timing.time_evaluations(context, mask, evaluations, before=after_mm))
        samples["model"].append(timing.time_model_calls(region_model, region_positions, evaluations,
                                                        before=after_mm))
    return ({name: timing.median(t.wall_ms for t in values) for name, values in samples.items()},
            {name: timing.median(t.cpu_ms for t in values) for name, values in samples.items()})


def _ratios(rows: dict, breakdown: dict, key: str = "ms_per_step") -> dict[str, float | None]:
    """Speed ratios from one run; None where a row they need was not measured.

    With ``key="cpu_ms_per_step"`` (and the CPU-time breakdown) the same ratios of CPU time:
    the work each row does, which a machine shared with other jobs stretches less than the
    wall time (on an idle machine, rows whose threads run in parallel take less wall time).

    - ``mts_vs_mm``: ns/day of ``mts`` / ns/day of ``mm`` (target >= 0.5);
    - ``torchforce_vs_mm``: the same for ML every step;
    - ``torchforce_vs_pythonforce``: ns/day of ``torchforce`` / ``pythonforce`` (> 1: TorchForce faster);
    - ``bridge_overhead_fraction``: (torchforce - mm - model) / model, per inner step; it
      includes the MMRegion subtraction and the thread sharing of torch and OpenMM;
    - ``torchforce_call_overhead_fraction``: (one TorchForce evaluation - one empty
      evaluation - one model call) / model call, all three from the breakdown's interleaved
      rounds: the cost of the OpenMM-torch bridge itself. With the electrostatic or
      polarizable embedding the TorchForce also computes the coupling of the region to the
      MM charges, so both overhead fractions then include the embedding's cost;
    - ``mm_region_share_of_slow_group``: MMRegion / (MMRegion + ML TorchForce) per evaluation;
    - ``mm_region_share_of_mts_step``: one MMRegion evaluation / one outer step of ``mts``.
    """
    def ms(row):
        return rows[row][key] if row in rows else None

    def ratio(a, b):
        return None if a is None or b is None else a / b

    ratios = {
        "mts_vs_mm": ratio(ms("mm"), ms("mts")),
        "torchforce_vs_mm": ratio(ms("mm"), ms("torchforce")),
        "torchforce_vs_pythonforce": ratio(ms("pythonforce"), ms("torchforce")),
        "bridge_overhead_fraction": None,
        "torchforce_call_overhead_fraction": None,
        "mm_region_share_of_slow_group": None,
        "mm_region_share_of_mts_step": None,
    }
    if None not in (ms("torchforce"), ms("mm"), ms("model")):
        ratios["bridge_overhead_fraction"] = (ms("torchforce") - ms("mm") - ms("model")) / ms("model")
    if breakdown:
        ratios["torchforce_call_overhead_fraction"] = (
            breakdown["ml_torchforce"] - breakdown["empty"] - breakdown["model"]) / breakdown["model"]
    if "mm_region" in breakdown:
        region = breakdown["mm_region"] - breakdown["empty"]
        ml = breakdown["ml_torchforce"] - breakdown["empty"]
        ratios["mm_region_share_of_slow_group"] = region / (region + ml)
        if "mts" in rows:
            ratios["mm_region_share_of_mts_step"] = region / (ms("mts") * rows["mts"]["mts_factor"])
    return ratios


_BLOWN_UP_ADVICE = ("its timings are meaningless. Use a smaller MTS factor or time step, minimize longer, or check "
                    "that the model's forces are sound (generated weights are not).")


def _check_finite(context: openmm.Context, row: str, system: str) -> None:
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    if not math.isfinite(energy):
        raise SimulationError(f"the {row} row on {system} ended with potential energy {energy}; {_BLOWN_UP_ADVICE}")


@contextlib.contextmanager
def _dynamics_of(row: str, system: str):
    """Turn OpenMM's failure of a row's dynamics (NaN coordinates, ...) into a SimulationError naming the row."""
    try:
        yield
    except openmm.OpenMMException as exc:
        raise SimulationError(f"the {row} row on {system} failed ({exc}); {_BLOWN_UP_ADVICE}") from exc
