"""Estimators: MBAR over equilibrium windows, Jarzynski and BAR over switching work.

Everything here is pymbar 4: :class:`pymbar.MBAR` (free energies, uncertainties, overlap
matrix), :mod:`pymbar.timeseries` (equilibration detection and decorrelation) and
:mod:`pymbar.other_estimators` (``exp`` for Jarzynski, ``bar`` for Bennett/Crooks).
Inputs are in kT; results are reported in kJ/mol (and kT where useful).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, SimulationError

#: fractions of each window's decorrelated samples used for the convergence curves
CONVERGENCE_FRACTIONS = tuple(np.round(np.linspace(0.1, 1.0, 10), 2))
#: smallest acceptable overlap between neighbouring states (a common rule of thumb)
MIN_NEIGHBOUR_OVERLAP = 0.03


def _json_list(values) -> list:
    """A list for JSON, with None where a value is not finite (JSON has no NaN)."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=float)]


def _label(state) -> str:
    """A state label for messages: ``lambda_ml=0.5``, ``(lambda_a=0, lambda_b=0.3)``, or the label itself."""
    if not isinstance(state, dict):
        return str(state)
    text = ", ".join(f"{name}={value:g}" for name, value in state.items())
    return text if len(state) == 1 else f"({text})"


def _estimate(value: float, error: float) -> dict:
    return {"value": float(value), "error": float(error)}


@dataclass
class MBARResult:
    """MBAR estimate of G(last state) - G(first state) for one leg; energies in kJ/mol.

    ``convergence`` holds the estimate from growing fractions of each window's
    decorrelated samples taken from the start (``forward``) and from the end
    (``reverse``); ``converged`` says whether the first and the second half of the data
    agree within two combined standard errors and neighbouring states overlap by at least
    :data:`MIN_NEIGHBOUR_OVERLAP`.
    """

    dG: float
    dG_error: float
    kT: float
    state_labels: list
    state_dG: np.ndarray  # (K,) G(state) - G(first state)
    state_dG_error: np.ndarray
    overlap: np.ndarray  # (K, K)
    n_samples: np.ndarray  # (K,) decorrelated samples used
    statistical_inefficiency: np.ndarray  # (K,)
    convergence: dict
    dudl_mean: np.ndarray | None = None  # (K,) <dU/dlambda> per window, kJ/mol
    dudl_error: np.ndarray | None = None
    ti_dG: float | None = None  # trapezoidal thermodynamic integration of <dU/dlambda>, kJ/mol
    halves_agree: bool = True

    @property
    def min_neighbour_overlap(self) -> float:
        return float(min(self.overlap[k, k + 1] for k in range(len(self.overlap) - 1)))

    @property
    def converged(self) -> bool:
        return bool(self.halves_agree and self.min_neighbour_overlap >= MIN_NEIGHBOUR_OVERLAP)

    def problems(self) -> list[str]:
        """Why the leg is not converged, each with its remedy; empty when it is."""
        found = []
        for k in range(len(self.overlap) - 1):
            if self.overlap[k, k + 1] < MIN_NEIGHBOUR_OVERLAP:
                found.append(f"states {_label(self.state_labels[k])} and {_label(self.state_labels[k + 1])} overlap by "
                             f"{self.overlap[k, k + 1]:.3f} (< {MIN_NEIGHBOUR_OVERLAP}): add windows between them")
        if not self.halves_agree:
            found.append("the first and second halves of the samples disagree: sample longer (more steps per window)")
        return found

    def to_dict(self) -> dict:
        data = {
            "dG": _estimate(self.dG, self.dG_error),
            "converged": self.converged,
            "halves_agree": self.halves_agree,
            "min_neighbour_overlap": self.min_neighbour_overlap,
            "states": self.state_labels,
            "state_dG": self.state_dG.tolist(),
            "state_dG_error": self.state_dG_error.tolist(),
            "overlap": self.overlap.tolist(),
            "n_samples": self.n_samples.tolist(),
            "statistical_inefficiency": self.statistical_inefficiency.tolist(),
            "convergence": {k: _json_list(v) for k, v in self.convergence.items()},
        }
        if self.dudl_mean is not None:
            data["dudl_mean"] = _json_list(self.dudl_mean)
            data["dudl_error"] = _json_list(self.dudl_error)
            data["ti_dG"] = self.ti_dG
        return data

    @classmethod
    def from_dict(cls, data: dict, kT: float) -> "MBARResult":
        """The result :meth:`to_dict` wrote (``kT`` in kJ/mol, which it does not store); None reads as NaN."""
        def array(key):
            return np.array(data[key], dtype=float)

        dudl = "dudl_mean" in data
        return cls(
            dG=float(data["dG"]["value"]), dG_error=float(data["dG"]["error"]), kT=kT, state_labels=list(data["states"]),
            state_dG=array("state_dG"), state_dG_error=array("state_dG_error"), overlap=array("overlap"),
            n_samples=np.array(data["n_samples"], dtype=int), statistical_inefficiency=array("statistical_inefficiency"),
            convergence={key: np.array(values, dtype=float) for key, values in data["convergence"].items()},
            dudl_mean=array("dudl_mean") if dudl else None, dudl_error=array("dudl_error") if dudl else None,
            ti_dG=data.get("ti_dG"), halves_agree=bool(data["halves_agree"]),
        )


def decorrelate(reduced_potentials: np.ndarray, index: int) -> tuple[np.ndarray, float]:
    """Indices of the equilibrated, decorrelated samples of window ``index``, and the statistical inefficiency.

    The observable is the reduced-energy difference between the window's neighbours
    (what MBAR is sensitive to); equilibration is detected with
    ``pymbar.timeseries.detect_equilibration`` and the rest subsampled by its statistical
    inefficiency.
    """
    from pymbar import timeseries

    K = reduced_potentials.shape[0]
    observable = reduced_potentials[min(index + 1, K - 1)] - reduced_potentials[max(index - 1, 0)]
    if np.ptp(observable) == 0.0:  # identical neighbours: every sample is as good as another
        return np.arange(reduced_potentials.shape[1]), 1.0
    t0, g, _ = timeseries.detect_equilibration(observable)
    kept = timeseries.subsample_correlated_data(observable[t0:], g=g)
    return t0 + np.asarray(kept, dtype=int), float(g)


@contextlib.contextmanager
def _quiet_pymbar():
    """Silence pymbar's solver chatter (it retries other solvers on small subsets of the data)."""
    logger = logging.getLogger("pymbar")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _create_mbar(u_kn: np.ndarray, N_k: np.ndarray, solver: str):
    """pymbar.MBAR started from BAR between neighbouring states, or from zeros where BAR cannot start.

    Between two states that barely overlap pymbar's BAR start raises ``BoundsError``; in
    pymbar 4.0.3 its handler then fails with ``NameError`` (it names an exception it never
    imports). Either way the solver is started from zeros instead.
    """
    import pymbar
    from pymbar.utils import BoundsError

    if len(N_k) > 1:
        try:
            return pymbar.MBAR(u_kn, N_k, initialize="BAR", solver_protocol=solver)
        except (BoundsError, NameError):
            pass
    return pymbar.MBAR(u_kn, N_k, initialize="zeros", solver_protocol=solver)


def _mbar(u_blocks: list[np.ndarray]):
    """Solve MBAR for per-window blocks u[k] of shape (K, n_k); returns (f_k, df_k, mbar).

    pymbar's default solver is tried first, then its "robust" one; :class:`SimulationError`
    when neither converges (too little overlap between the states).
    """
    from pymbar.utils import ParameterError

    N_k = np.array([block.shape[1] for block in u_blocks])
    u_kn = np.concatenate(u_blocks, axis=1)
    # Remove each state's large constant offset (ML and MM zeros of energy differ by ~1e5 kT): shift
    # u_l by its median over the samples drawn in state l. (Not a mean over all samples: configurations
    # of decoupled states can put u_l of coupled states at 1e20 kT and wipe out float64 precision.)
    shift = np.array([[np.median(block[l])] for l, block in enumerate(u_blocks)])
    failure = None
    for solver in ("default", "robust"):
        try:
            mbar = _create_mbar(u_kn - shift, N_k, solver)
            result = mbar.compute_free_energy_differences(compute_uncertainty=True)
        except (ParameterError, np.linalg.LinAlgError) as exc:
            failure = exc
            continue
        f = result["Delta_f"][0] + (shift[:, 0] - shift[0, 0])
        df = result["dDelta_f"][0]
        if not np.all(np.isfinite(f)) or not np.all(np.isfinite(df)):  # pymbar's sign that the states do not overlap
            failure = "its uncertainty is not a number"
            continue
        return f, df, mbar
    raise SimulationError(
        f"MBAR did not converge ({failure}); the states overlap too little. Add lambda windows where the overlap "
        "matrix shows gaps, or sample longer (protocol fields samples_per_window, steps_per_sample)."
    )


def mbar_analysis(windows, kT: float, state_labels=None) -> MBARResult:
    """MBAR for one leg from its :class:`~mlmm.freeenergy.sampling.WindowSamples` (any order)."""
    windows = sorted(windows, key=lambda w: w.index)
    K = windows[0].reduced_potentials.shape[0]
    if [w.index for w in windows] != list(range(K)):
        raise InputError(f"MBAR needs one window per state (0..{K - 1}); got windows {[w.index for w in windows]}.")
    kept, g = zip(*(decorrelate(w.reduced_potentials, w.index) for w in windows))
    blocks = [w.reduced_potentials[:, idx] for w, idx in zip(windows, kept)]
    f, df, mbar = _mbar(blocks)
    overlap = np.asarray(mbar.compute_overlap()["matrix"])
    n_kept = np.array([len(idx) for idx in kept])

    convergence = {"fractions": np.array(CONVERGENCE_FRACTIONS)}
    for direction in ("forward", "reverse"):
        values, errors = [], []
        for fraction in CONVERGENCE_FRACTIONS:
            part = []
            for block in blocks:
                m = max(2, int(np.ceil(fraction * block.shape[1])))
                part.append(block[:, :m] if direction == "forward" else block[:, -m:])
            try:
                with _quiet_pymbar():
                    fp, dfp, _ = _mbar(part)
            except SimulationError:  # a small fraction of the data may not determine MBAR: leave a gap
                fp, dfp = [np.nan], [np.nan]
            values.append(fp[-1] * kT)
            errors.append(dfp[-1] * kT)
        convergence[direction] = np.array(values)
        convergence[f"{direction}_error"] = np.array(errors)
    half = list(CONVERGENCE_FRACTIONS).index(0.5)
    difference = convergence["forward"][half] - convergence["reverse"][half]
    spread = np.hypot(convergence["forward_error"][half], convergence["reverse_error"][half])
    halves_agree = bool(abs(difference) <= 2.0 * spread + 1e-9)

    result = MBARResult(
        dG=float(f[-1] * kT), dG_error=float(df[-1] * kT), kT=kT,
        state_labels=list(state_labels) if state_labels is not None else list(range(K)),
        state_dG=f * kT, state_dG_error=df * kT, overlap=overlap, n_samples=n_kept,
        statistical_inefficiency=np.array(g), convergence=convergence, halves_agree=halves_agree,
    )
    if all(w.dudl is not None for w in windows):
        means = np.array([w.dudl[idx].mean() for w, idx in zip(windows, kept)])
        errors = np.array([w.dudl[idx].std(ddof=1) / np.sqrt(len(idx)) if len(idx) > 1 else np.nan for w, idx in zip(windows, kept)])
        lambdas = np.array([label["lambda_ml"] for label in state_labels]) if state_labels else None
        result.dudl_mean, result.dudl_error = means, errors
        if lambdas is not None:
            result.ti_dG = float(np.trapezoid(means, lambdas))
    return result


@dataclass
class NEQResult:
    """Free energy of a leg from non-equilibrium switching; energies in kJ/mol.

    ``jarzynski_forward`` uses forward work only, exp(-dG/kT) = <exp(-W_F/kT)>;
    ``jarzynski_reverse`` uses reverse work only, exp(+dG/kT) = <exp(-W_R/kT)>;
    ``bar`` combines both directions (Crooks' theorem, Bennett's acceptance ratio).
    """

    forward_work: np.ndarray  # kJ/mol
    reverse_work: np.ndarray  # kJ/mol
    kT: float
    jarzynski_forward: dict | None
    jarzynski_reverse: dict | None
    bar: dict | None

    def to_dict(self) -> dict:
        return {
            "forward_work": self.forward_work.tolist(),
            "reverse_work": self.reverse_work.tolist(),
            "jarzynski_forward": self.jarzynski_forward,
            "jarzynski_reverse": self.jarzynski_reverse,
            "bar": self.bar,
        }

    @classmethod
    def from_dict(cls, data: dict, kT: float) -> "NEQResult":
        """The result :meth:`to_dict` wrote (``kT`` in kJ/mol, which it does not store)."""
        return cls(np.array(data["forward_work"], dtype=float), np.array(data["reverse_work"], dtype=float), kT,
                   data["jarzynski_forward"], data["jarzynski_reverse"], data["bar"])


def neq_analysis(forward_work_kT, reverse_work_kT, kT: float) -> NEQResult:
    """Jarzynski estimates in each direction and BAR over both, from work values in kT."""
    from pymbar import other_estimators

    w_f = np.asarray(forward_work_kT, dtype=float)
    w_r = np.asarray(reverse_work_kT, dtype=float)
    # The estimators see work relative to a constant c (ML and MM energies have different
    # zeros, so raw work can be ~1e5 kT); dG(W - c) = dG(W) - c exactly, added back below.
    c = float(np.median(np.concatenate([w_f, -w_r]))) if w_f.size + w_r.size else 0.0

    def scaled(estimate: dict, sign: float = 1.0) -> dict:
        return _estimate((sign * estimate["Delta_f"] + c) * kT, estimate["dDelta_f"] * kT)

    forward = scaled(other_estimators.exp(w_f - c)) if w_f.size > 1 else None
    reverse = scaled(other_estimators.exp(w_r + c), sign=-1.0) if w_r.size > 1 else None
    both = scaled(other_estimators.bar(w_f - c, w_r + c)) if w_f.size > 1 and w_r.size > 1 else None
    return NEQResult(w_f * kT, w_r * kT, kT, forward, reverse, both)
