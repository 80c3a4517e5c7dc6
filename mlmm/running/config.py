"""The configuration of one production run, validated as a whole before anything is written.

:class:`RunConfig` holds every option of ``mlmm run`` in OpenMM units (ps, K, bar, 1/ps);
times may also be given as strings (``"2fs"``, ``"0.5ns"``) or ``openmm.unit`` quantities.
:meth:`RunConfig.validate` checks every value that can be checked without the molecular
system and raises one :class:`~mlmm.errors.InputError` listing all problems; the region and
the model are checked against the system when the run is set up, still before the output
folder is created.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import openmm.unit as u

from ..embedding import EMBEDDINGS
from ..embedding.mm_region import NONBONDED_METHODS
from ..errors import InputError
from ..platforms import GPU_PLATFORMS, platform_problem
from ..splitting import DEFAULT_INNER_TIMESTEP_FS, DEFAULT_MTS_FACTOR, ENSEMBLES, warn_if_outer_timestep_unstable
from ..units import parse_time_ps, value_in

PRECISIONS = ("single", "mixed", "double")
TRAJECTORY_SUFFIXES = (".dcd", ".xtc", ".h5", ".hdf5")
RECIPE_SUFFIXES = (".yaml", ".yml")
NO_MODEL = "none"


@dataclass
class RunConfig:
    """Every option of one run. Units: ps, K, bar, 1/ps; step counts are integrator (outer) steps.

    One integrator step advances time by the outer step ``mts_factor * inner_timestep``;
    ``steps``, the report intervals and the checkpoint interval all count those steps.
    Give the run length as ``steps`` or as ``length`` (ps or a time string), not both.
    """

    output: str
    input: str | None = None  # built system folder or YAML recipe; None when a MolecularSystem is passed
    model: str | None = None  # a plugin name (`mlmm models`); None or "none": pure MM
    embedding: str = "mechanical"
    region: str | None = None  # ML region: a region name, "resname XYZ" or an MDTraj selection; None: "ligand"
    model_options: dict = field(default_factory=dict)
    link_atoms: bool = False  # cap covalent bonds the region cuts with link hydrogens
    mm_region: str = "pairs"  # the region's own MM nonbonded energy: "pairs" or "box" (mlmm.embedding.mm_region)
    mts_factor: int = DEFAULT_MTS_FACTOR  # k: ML correction every k inner steps
    inner_timestep: float = DEFAULT_INNER_TIMESTEP_FS * 1e-3  # ps
    temperature: float = 300.0  # K
    friction: float = 1.0  # 1/ps
    pressure: float | None = None  # bar; None: constant volume
    barostat_interval: int = 25  # steps between Monte Carlo volume moves
    ensemble: str = "nvt"  # "nvt" (Langevin; NPT with a pressure) or "nve" (velocity Verlet)
    steps: int | None = None
    length: float | None = None  # ps
    platform: str | None = None  # None: the fastest platform that can run the system
    precision: str | None = None  # single, mixed or double (CUDA, OpenCL, HIP only)
    seed: int | None = None  # None: drawn at random and recorded in run.json
    minimize: bool = True
    minimize_tolerance: float = 10.0  # kJ/mol/nm, largest force at convergence
    minimize_max_iterations: int = 1000  # 0: until converged
    equilibration: float = 1.0  # ps of dynamics before production (not reported)
    trajectory: str | None = "trajectory.dcd"  # file name in the output folder; format from the suffix
    trajectory_interval: int = 250
    energy_interval: int = 50
    checkpoint_interval: int = 2500

    def __post_init__(self):
        self.output = str(self.output)
        if self.input is not None:
            self.input = str(self.input)
        if isinstance(self.model, str) and self.model.strip().lower() == NO_MODEL:
            self.model = None
        self.inner_timestep = _time_or_keep(self.inner_timestep, "inner_timestep")
        self.length = None if self.length is None else _time_or_keep(self.length, "length")
        self.equilibration = _time_or_keep(self.equilibration, "equilibration")
        self.temperature = _number_or_keep(self.temperature, u.kelvin, "temperature")
        self.friction = _number_or_keep(self.friction, u.picosecond**-1, "friction")
        if self.pressure is not None:
            self.pressure = _number_or_keep(self.pressure, u.bar, "pressure")
        self.minimize_tolerance = _number_or_keep(
            self.minimize_tolerance, u.kilojoule_per_mole / u.nanometer, "minimize_tolerance")

    # ------------------------------------------------------------------ derived values
    @property
    def outer_timestep(self) -> float:
        """ps advanced by one integrator step: ``mts_factor * inner_timestep``."""
        return self.mts_factor * self.inner_timestep

    @property
    def total_steps(self) -> int:
        """Production length in integrator steps (a ``length`` is rounded up to whole steps)."""
        if self.steps is not None:
            return int(self.steps)
        return _steps_for(self.length, self.outer_timestep)

    @property
    def equilibration_steps(self) -> int:
        return _steps_for(self.equilibration, self.outer_timestep)

    # ------------------------------------------------------------------ validation
    def validate(self) -> "RunConfig":
        """Raise one :class:`InputError` listing every invalid value; return ``self`` when all are valid.

        A valid ML/MM configuration whose outer step exceeds the stable 4 fs draws a
        :class:`~mlmm.errors.StabilityWarning` (:func:`mlmm.splitting.warn_if_outer_timestep_unstable`).
        """
        problems = [problem for check in _CHECKS for problem in check(self)]
        if problems:
            raise InputError("invalid run configuration:\n  - " + "\n  - ".join(problems))
        if self.model is not None:
            warn_if_outer_timestep_unstable(self.inner_timestep, self.mts_factor)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown run option(s) {', '.join(unknown)}; known options: {', '.join(sorted(known))}.")
        return cls(**data)


# ---------------------------------------------------------------------- value parsing
def _time_or_keep(value, name):
    """Parse a time to ps; leave what cannot be parsed for validate() to report."""
    try:
        return parse_time_ps(value, name)
    except InputError as exc:
        return _Invalid(str(exc))


def _number_or_keep(value, unit, name):
    if isinstance(value, (u.Quantity, numbers.Real)) and not isinstance(value, bool):
        try:
            return value_in(value, unit, name)
        except InputError as exc:
            return _Invalid(str(exc))
    try:
        return float(value)
    except (TypeError, ValueError):
        return _Invalid(f"{name} = {value!r} is not a number; give it in {unit}.")


class _Invalid(str):
    """A value that failed to parse; carries the message validate() reports."""


def _steps_for(time_ps: float, outer_timestep_ps: float) -> int:
    return int(math.ceil(time_ps / outer_timestep_ps - 1e-9))


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, (bool, _Invalid)) and math.isfinite(value)


# ---------------------------------------------------------------------- checks
def _check_parsed(config):
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, _Invalid):
            yield str(value)


def _check_io(config):
    if config.input is not None:
        path = Path(config.input)
        if not path.exists():
            yield f"input {config.input!r} does not exist; give a system folder (`mlmm build`) or a YAML recipe."
        elif path.is_file() and path.suffix.lower() not in RECIPE_SUFFIXES:
            yield (f"input {config.input!r} is a {path.suffix or 'suffix-less'} file; give a saved system folder "
                   f"or a recipe ({', '.join(RECIPE_SUFFIXES)}).")
    if not config.output.strip():
        yield "output folder is empty; give a folder name with -o/--output."
    if config.trajectory is not None:
        name = Path(config.trajectory)
        if name.name != config.trajectory:
            yield f"trajectory = {config.trajectory!r} must be a plain file name inside the output folder."
        if name.suffix.lower() not in TRAJECTORY_SUFFIXES:
            yield (f"trajectory = {config.trajectory!r} has an unknown format; use a name ending in "
                   f"{', '.join(TRAJECTORY_SUFFIXES)} (or None for no trajectory).")


def _check_model(config):
    from ..potentials import plugin_names

    if config.model is not None:
        names = plugin_names()
        if config.model not in names:
            yield f"model = {config.model!r} is unknown; installed models: {', '.join(names) or 'none'}, or 'none' for pure MM."
    if config.embedding not in EMBEDDINGS:
        yield f"embedding = {config.embedding!r} is unknown; choose one of {', '.join(EMBEDDINGS)}."
    if config.region is not None and (not isinstance(config.region, str) or not config.region.strip()):
        yield f"region = {config.region!r} must be a region name, 'resname XYZ' or an MDTraj selection."
    if not isinstance(config.model_options, dict):
        yield f"model_options = {config.model_options!r} must be a dict of keyword options."
    if config.mm_region not in NONBONDED_METHODS:
        yield f"mm_region = {config.mm_region!r} is unknown; choose {' or '.join(NONBONDED_METHODS)}."
    if not isinstance(config.link_atoms, bool):
        yield f"link_atoms = {config.link_atoms!r} must be true or false."


def _check_dynamics(config):
    if not _is_int(config.mts_factor) or config.mts_factor < 1:
        yield f"mts_factor = {config.mts_factor!r} must be an integer k >= 1 (1: ML every step)."
    if _finite(config.inner_timestep) and not config.inner_timestep > 0:
        yield f"inner_timestep = {config.inner_timestep} ps must be positive, e.g. '2fs'."
    if _finite(config.inner_timestep) and config.inner_timestep > 0.01:
        yield f"inner_timestep = {config.inner_timestep} ps is longer than 10 fs; MD needs about 0.5-4 fs."
    if config.ensemble not in ENSEMBLES:
        yield f"ensemble = {config.ensemble!r} is unknown; choose {' or '.join(ENSEMBLES)}."
    if not _finite(config.temperature) or not config.temperature > 0:
        yield f"temperature = {config.temperature!r} K must be positive, e.g. 300."
    if not _finite(config.friction) or config.friction < 0:
        yield f"friction = {config.friction!r} /ps must be >= 0, e.g. 1."
    if config.pressure is not None:
        if not _finite(config.pressure) or not config.pressure > 0:
            yield f"pressure = {config.pressure!r} bar must be positive (or None for constant volume)."
        if config.ensemble == "nve":
            yield "pressure needs ensemble 'nvt' (Langevin + Monte Carlo barostat); NVE keeps the volume fixed."
    if not _is_int(config.barostat_interval) or config.barostat_interval < 1:
        yield f"barostat_interval = {config.barostat_interval!r} must be an integer >= 1."
    if config.seed is not None and (not _is_int(config.seed) or not 0 <= config.seed <= 2**31 - 2):
        yield f"seed = {config.seed!r} must be an integer in 0..{2**31 - 2} or None."


def _check_length(config):
    if (config.steps is None) == (config.length is None):
        yield "give the run length either as steps (--steps 1000) or as a time (--length 2ps), exactly one of them."
    elif config.steps is not None and (not _is_int(config.steps) or config.steps < 1):
        yield f"steps = {config.steps!r} must be an integer >= 1."
    elif _finite(config.length) and not config.length > 0:
        yield f"length = {config.length} ps must be positive, e.g. '2ps'."
    if _finite(config.equilibration) and config.equilibration < 0:
        yield f"equilibration = {config.equilibration} ps must be >= 0."
    for name in ("trajectory_interval", "energy_interval", "checkpoint_interval"):
        value = getattr(config, name)
        if not _is_int(value) or value < 1:
            yield f"{name} = {value!r} must be an integer number of steps >= 1."
    if not _is_int(config.minimize_max_iterations) or config.minimize_max_iterations < 0:
        yield f"minimize_max_iterations = {config.minimize_max_iterations!r} must be an integer >= 0 (0: until converged)."
    if _finite(config.minimize_tolerance) and not config.minimize_tolerance > 0:
        yield f"minimize_tolerance = {config.minimize_tolerance} kJ/mol/nm must be positive."


def _check_platform(config):
    problem = None if config.platform is None else platform_problem(config.platform)
    if problem is not None:
        yield problem
    if config.precision is not None:
        if config.precision not in PRECISIONS:
            yield f"precision = {config.precision!r} is unknown; choose {', '.join(PRECISIONS)}."
        elif config.platform not in GPU_PLATFORMS:
            yield (f"precision = {config.precision!r} needs platform {' or '.join(GPU_PLATFORMS)} named explicitly "
                   f"(platform = {config.platform!r}); Reference always runs in double, CPU in single/mixed.")


_CHECKS = (_check_parsed, _check_io, _check_model, _check_dynamics, _check_length, _check_platform)
