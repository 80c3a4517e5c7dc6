"""How long and how finely a free-energy calculation samples: one dataclass, named presets.

A :class:`Protocol` fixes everything that is not chemistry: temperature, pressure, time
step, how each lambda window is equilibrated and sampled, the lambda schedules and the
non-equilibrium switching. The presets trade accuracy for time:

- ``"smoke"``: seconds per leg; for tests and demonstrations only, its numbers are not
  converged;
- ``"quick"``: minutes per small molecule on two CPU cores; a development estimate, whose
  MBAR errors understate its scatter from one seed to the next (about 1 kcal/mol for
  methane and methanol);
- ``"standard"``: the windows of ``quick`` (five of lambda_ml) sampled five times longer,
  30 ps each; about 18 CPU minutes per small molecule for MM, where it agrees with
  FreeSolv's GAFF values for methane and methanol to 0.2 kcal/mol;
- ``"production"``: closer to published protocols (more windows, nanoseconds per leg).

Any field can be changed with :meth:`Protocol.replace`, and a protocol round-trips through
YAML (:meth:`Protocol.to_yaml`, :meth:`Protocol.from_yaml`), so a longer protocol is a file
away. Units: K, bar, ps, 1/ps; a Quantity is converted, and the time step may also be
written like ``"2fs"``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm.unit as u

from ..errors import InputError
from ..units import KB_KJ_PER_MOL_K, parse_time_ps, value_in


def _ladder(values, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise InputError(f"protocol field {name} = {values!r} must be a list of numbers between 0 and 1.") from None


#: Fields with a unit: a Quantity is converted, a plain number taken in this unit (the time
#: step, in ps, is read by :func:`mlmm.units.parse_time_ps`, which also takes "2fs").
_UNITS = {"temperature": u.kelvin, "pressure": u.bar, "friction": u.picosecond**-1}
#: Fields that count steps, samples, threads or seeds.
_WHOLE_NUMBERS = ("barostat_interval", "minimization_steps", "equilibration_steps", "samples_per_window",
                  "steps_per_sample", "neq_switches", "neq_steps", "threads", "seed")


def _whole_number(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or value != int(value):
        raise InputError(f"protocol field {name} = {value!r} must be a whole number.")
    return int(value)


@dataclass(frozen=True)
class Protocol:
    """Sampling settings shared by every leg of a free-energy calculation.

    Equilibrium windows: each window is minimized (``minimization_steps`` iterations at
    most), equilibrated for ``equilibration_steps`` and then sampled ``samples_per_window``
    times, one sample every ``steps_per_sample`` steps; at each sample the reduced
    potential of every state of the leg is evaluated for MBAR.

    Lambda schedules (each a sequence of values, in the order the windows are laid out):
    ``endstate_lambdas`` for LAMBDA_ML (0 = MM, 1 = ML/MM), ``electrostatics_lambdas``
    then ``sterics_lambdas`` for decoupling the solute (1 = fully coupled, 0 = off);
    electrostatics are switched off first, at full sterics, then sterics with soft-core.

    Non-equilibrium switching: ``neq_switches`` trajectories in each direction, each
    ``neq_steps`` steps long, started from equilibrium snapshots of the end-state windows;
    0 switches disables it.
    """

    name: str = "custom"
    temperature: float = 298.15  # K
    pressure: float | None = 1.01325  # bar; None = constant volume. Used only for periodic systems.
    barostat_interval: int = 25  # steps between Monte Carlo volume moves
    timestep: float = 0.002  # ps
    friction: float = 1.0  # 1/ps
    minimization_steps: int = 500  # L-BFGS iterations at most per window; 0 skips minimization
    equilibration_steps: int = 2500
    samples_per_window: int = 100
    steps_per_sample: int = 250
    endstate_lambdas: tuple[float, ...] = tuple(np.linspace(0.0, 1.0, 6))
    electrostatics_lambdas: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.0)
    sterics_lambdas: tuple[float, ...] = (1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0)
    neq_switches: int = 20
    neq_steps: int = 500
    platform: str = "CPU"
    threads: int = 1  # OpenMM CPU threads per task (PyTorch's: mlmm.threads)
    seed: int = 2024

    def __post_init__(self):
        normal = {name: _ladder(getattr(self, name), name)
                  for name in ("endstate_lambdas", "electrostatics_lambdas", "sterics_lambdas")}
        normal.update({name: _whole_number(getattr(self, name), name) for name in _WHOLE_NUMBERS})
        normal.update({name: value_in(getattr(self, name), unit, f"protocol field {name}")
                       for name, unit in _UNITS.items() if not (name == "pressure" and self.pressure is None)})
        normal["timestep"] = parse_time_ps(self.timestep, "protocol field timestep")
        for name, value in normal.items():
            object.__setattr__(self, name, value)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise :class:`InputError` naming the first field that cannot be used."""
        positive = {
            "temperature": self.temperature, "timestep": self.timestep, "friction": self.friction,
            "samples_per_window": self.samples_per_window, "steps_per_sample": self.steps_per_sample,
            "threads": self.threads, "barostat_interval": self.barostat_interval,
        }
        for name, value in positive.items():
            if not value > 0:
                raise InputError(f"protocol field {name} = {value!r} must be positive.")
        for name in ("minimization_steps", "equilibration_steps", "neq_switches", "neq_steps"):
            if getattr(self, name) < 0:
                raise InputError(f"protocol field {name} = {getattr(self, name)!r} must be zero or positive.")
        if self.pressure is not None and not self.pressure > 0:
            raise InputError(f"protocol field pressure = {self.pressure!r} must be positive (bar) or None for constant volume.")
        if self.neq_switches and self.neq_steps < 1:
            raise InputError("protocol field neq_steps must be at least 1 when neq_switches > 0.")
        if self.neq_switches > self.samples_per_window:
            raise InputError(
                f"protocol asks for {self.neq_switches} switches per direction but the end-state windows keep only "
                f"{self.samples_per_window} samples to start them from; lower neq_switches or raise samples_per_window."
            )
        self._check_ladder("endstate_lambdas", self.endstate_lambdas, first=0.0, last=1.0)
        self._check_ladder("electrostatics_lambdas", self.electrostatics_lambdas, first=1.0, last=0.0)
        self._check_ladder("sterics_lambdas", self.sterics_lambdas, first=1.0, last=0.0)

    @staticmethod
    def _check_ladder(name, values, first, last):
        if len(values) < 2 or values[0] != first or values[-1] != last:
            raise InputError(
                f"protocol field {name} = {list(values)} must run from {first} to {last} with at least two values."
            )
        steps = np.diff(values)
        if not (np.all(steps > 0) or np.all(steps < 0)):
            raise InputError(f"protocol field {name} = {list(values)} must change monotonically without repeats.")

    # ------------------------------------------------------------------ derived values
    @property
    def kT(self) -> float:
        """Thermal energy k_B T in kJ/mol."""
        return KB_KJ_PER_MOL_K * self.temperature

    @property
    def steps_per_window(self) -> int:
        """Integration steps of one equilibrium window (equilibration plus sampling)."""
        return self.equilibration_steps + self.samples_per_window * self.steps_per_sample

    def replace(self, **changes) -> "Protocol":
        """A copy with some fields changed; quantities are converted to K, bar, ps and 1/ps, and
        the time step may also be written like ``"2fs"``."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise InputError(f"unknown protocol field(s) {', '.join(unknown)}; known: {', '.join(self.field_names())}.")
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    # ------------------------------------------------------------------ presets and files
    @classmethod
    def preset(cls, name: str) -> "Protocol":
        """The named preset (see the module docstring)."""
        if name not in PRESETS:
            raise InputError(f"unknown protocol preset {name!r}; choose one of {', '.join(PRESETS)} or a YAML file.")
        return cls(name=name, **PRESETS[name])

    @classmethod
    def load(cls, name_or_path: "str | Path | Protocol") -> "Protocol":
        """A preset name, a YAML file (its ``preset`` key, if any, gives the starting point) or a Protocol."""
        if isinstance(name_or_path, Protocol):
            return name_or_path
        text = str(name_or_path)
        if text in PRESETS:
            return cls.preset(text)
        path = Path(text)
        if not path.is_file():
            raise InputError(f"protocol {text!r} is neither a preset ({', '.join(PRESETS)}) nor an existing YAML file.")
        return cls.from_yaml(path)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Protocol":
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as exc:
            raise InputError(f"protocol file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise InputError(f"protocol file {path} must hold a mapping of protocol fields, not {type(data).__name__}.")
        base = cls.preset(data.pop("preset")) if "preset" in data else cls()
        data.setdefault("name", Path(path).stem)
        return base.replace(**data)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        for name in ("endstate_lambdas", "electrostatics_lambdas", "sterics_lambdas"):
            data[name] = list(data[name])
        return data

    def to_yaml(self, path: str | Path) -> None:
        import yaml

        from ..atomic_io import write_text_atomic

        write_text_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


PRESETS: dict[str, dict] = {
    "smoke": dict(
        minimization_steps=100, equilibration_steps=100, samples_per_window=20, steps_per_sample=10,
        endstate_lambdas=(0.0, 0.5, 1.0), electrostatics_lambdas=(1.0, 0.5, 0.0),
        sterics_lambdas=(1.0, 0.6, 0.3, 0.0), neq_switches=4, neq_steps=20,
    ),
    "quick": dict(
        minimization_steps=200, equilibration_steps=500, samples_per_window=60, steps_per_sample=50,
        endstate_lambdas=(0.0, 0.5, 1.0), electrostatics_lambdas=(1.0, 0.75, 0.5, 0.25, 0.0),
        sterics_lambdas=(1.0, 0.75, 0.55, 0.4, 0.3, 0.2, 0.1, 0.0), neq_switches=0, neq_steps=200,
    ),
    "standard": dict(
        minimization_steps=200, equilibration_steps=500, samples_per_window=300, steps_per_sample=50,
        endstate_lambdas=(0.0, 0.25, 0.5, 0.75, 1.0), electrostatics_lambdas=(1.0, 0.75, 0.5, 0.25, 0.0),
        sterics_lambdas=(1.0, 0.75, 0.55, 0.4, 0.3, 0.2, 0.1, 0.0), neq_switches=0, neq_steps=200,
    ),
    "production": dict(
        minimization_steps=1000, equilibration_steps=50_000, samples_per_window=1000, steps_per_sample=500,
        endstate_lambdas=tuple(np.linspace(0.0, 1.0, 11)),
        electrostatics_lambdas=(1.0, 0.8, 0.6, 0.4, 0.2, 0.0),
        sterics_lambdas=(1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05, 0.0),
        neq_switches=100, neq_steps=5000,
    ),
}
