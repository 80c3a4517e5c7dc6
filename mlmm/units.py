"""Unit handling at mlmm's public boundaries.

mlmm speaks OpenMM's units everywhere: nm, ps, kJ/mol, K, bar, e. A function that takes a
physical value accepts either an ``openmm.unit.Quantity`` (converted) or a plain number
(taken to be in the unit above). Inside TorchScript modules the same units apply; models
that work in Angstrom and eV convert at their own boundary with the constants below.
"""

from __future__ import annotations

import re

import numpy as np
import openmm.unit as u

from .errors import InputError

#: 1 nm in Angstrom
ANGSTROM_PER_NM = 10.0
#: 1 eV in kJ/mol (CODATA 2018: e * N_A / 1000)
KJ_PER_MOL_PER_EV = 96.48533212331002
#: Coulomb constant 1/(4 pi eps0) in kJ/mol nm e^-2, the value OpenMM uses
COULOMB_CONSTANT = 138.935456
#: Boltzmann constant in kJ/mol/K
KB_KJ_PER_MOL_K = 0.00831446261815324
#: 1 kcal in kJ
KJ_PER_KCAL = 4.184


def value_in(value, unit: u.Unit, name: str = "value") -> float:
    """Return ``value`` as a float in ``unit``.

    ``value`` may be a Quantity compatible with ``unit`` or a plain number already in
    ``unit``. Raises :class:`InputError` naming ``name`` when the dimension is wrong.
    """
    if isinstance(value, u.Quantity):
        if not value.unit.is_compatible(unit):
            raise InputError(f"{name} = {value} has units incompatible with {unit}; give it in {unit}.")
        return float(value.value_in_unit(unit))
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} = {value!r} is not a number; give a number in {unit}.") from None


def array_in(value, unit: u.Unit, name: str = "value") -> np.ndarray:
    """Return an array (for example positions) as a float64 NumPy array in ``unit``."""
    if isinstance(value, u.Quantity):
        if not value.unit.is_compatible(unit):
            raise InputError(f"{name} has units {value.unit}, incompatible with {unit}.")
        value = value.value_in_unit(unit)
    return np.asarray(
        [[float(c) for c in row] for row in value] if not isinstance(value, np.ndarray) else value,
        dtype=np.float64,
    )


_TIME_UNITS = {"fs": 1e-3, "ps": 1.0, "ns": 1e3, "us": 1e6}


def parse_time_ps(text: str | float, name: str = "time") -> float:
    """Parse a time such as ``"2ps"``, ``"0.5 ns"``, ``"4fs"`` or a bare number (ps) into ps."""
    if isinstance(text, (int, float)):
        return float(text)
    if isinstance(text, u.Quantity):
        return value_in(text, u.picosecond, name)
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(fs|ps|ns|us)?\s*", str(text))
    if not match:
        raise InputError(f"{name} = {text!r} is not a time; write it like '2ps', '0.5ns' or '4fs'.")
    try:
        number = float(match.group(1))
    except ValueError:
        raise InputError(f"{name} = {text!r} is not a time; write it like '2ps', '0.5ns' or '4fs'.") from None
    return number * _TIME_UNITS[match.group(2) or "ps"]
