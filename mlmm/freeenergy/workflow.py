"""From a leg to its free energy: the task graph of one leg and the analysis of its output.

:func:`leg_graph` lays out one ``sample_window`` task per state and, for LAMBDA_ML legs
when asked, one ``switch`` task per direction that starts from the end windows'
snapshots; :func:`analyse_leg` turns their outputs into a :class:`LegResult` (MBAR, and
Jarzynski/BAR when switching ran). :func:`run_legs` does both for ready-made legs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SimulationError
from .analysis import MBARResult, NEQResult, mbar_analysis, neq_analysis
from .sampling import sample_window, switch
from .states import describe_state
from .tasks import compute, task_seed


@dataclass
class LegResult:
    """Free energy G(last state) - G(first state) of one leg (kJ/mol) and what it cost."""

    name: str
    mbar: MBARResult
    neq: NEQResult | None
    cpu_seconds: float  # summed over the leg's tasks
    steps: int  # MD steps over all tasks
    outputs: list = field(default_factory=list, repr=False)  # the raw WindowSamples and SwitchingWork, to re-analyse

    @property
    def dG(self) -> float:
        return self.mbar.dG

    @property
    def dG_error(self) -> float:
        return self.mbar.dG_error

    def to_dict(self) -> dict:
        data = {"name": self.name, "mbar": self.mbar.to_dict(), "cpu_seconds": self.cpu_seconds, "steps": self.steps}
        if self.neq is not None:
            data["neq"] = self.neq.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict, kT: float) -> "LegResult":
        """A leg read back from :meth:`to_dict`; the raw samples (``outputs``) are not saved, so it has none."""
        neq = NEQResult.from_dict(data["neq"], kT) if "neq" in data else None
        return cls(data["name"], MBARResult.from_dict(data["mbar"], kT), neq, float(data["cpu_seconds"]), int(data["steps"]))


def leg_graph(leg, n_states: int, protocol, label: str, neq: bool = False, run: str = "") -> dict:
    """The delayed tasks of one leg; ``leg`` may itself be a delayed object.

    Returns ``{"windows": [...], "forward": task or None, "reverse": task or None}``.
    Seeds depend on ``label`` (unique per leg, e.g. ``"mobley_123/solvent-decoupling"``)
    and the window index only; ``run`` (unique per call) keeps the Dask keys of two
    calls on one cluster apart.
    """
    import dask

    n_switches = protocol.neq_switches if neq else 0
    windows = [
        dask.delayed(sample_window, pure=False)(
            leg, k, protocol, task_seed(protocol.seed, label, "window", k),
            n_snapshots=n_switches if k in (0, n_states - 1) else 0,
            dask_key_name=f"window-{run}{label}-{k}",
        )
        for k in range(n_states)
    ]
    graph = {"windows": windows, "forward": None, "reverse": None}
    if n_switches:
        for direction, start in (("forward", windows[0]), ("reverse", windows[-1])):
            graph[direction] = dask.delayed(switch, pure=False)(
                leg, direction, start.snapshots, protocol, task_seed(protocol.seed, label, direction),
                dask_key_name=f"switch-{run}{label}-{direction}",
            )
    return graph


def graph_tasks(graph: dict) -> list:
    """The tasks of a :func:`leg_graph` as a flat list (windows, then switches present)."""
    return graph["windows"] + [graph[d] for d in ("forward", "reverse") if graph[d] is not None]


def analyse_leg(leg, outputs: list, protocol) -> LegResult:
    """:class:`LegResult` from the computed outputs of :func:`graph_tasks` (same order)."""
    windows = outputs[: leg.n_states]
    switches = outputs[leg.n_states:]
    try:
        mbar = mbar_analysis(windows, protocol.kT, [describe_state(state) for state in leg.states])
    except SimulationError as exc:
        raise SimulationError(f"leg {leg.name!r}: {exc}") from None
    neq = None
    if switches:
        by_direction = {s.direction: s.work for s in switches}
        neq = neq_analysis(by_direction["forward"], by_direction["reverse"], protocol.kT)
    cpu = sum(o.seconds for o in outputs)
    steps = sum(o.steps for o in outputs)
    return LegResult(leg.name, mbar, neq, cpu, steps, list(outputs))


def run_legs(legs: list, protocol, scheduler="serial", workers=None, neq: bool = False, progress: bool = True,
             label: str = "legs") -> dict[str, LegResult]:
    """Sample and analyse ready-made :class:`~mlmm.freeenergy.legs.Leg` objects; results by leg name.

    ``neq`` adds forward and reverse switching to the legs that interpolate LAMBDA_ML.
    """
    import uuid

    import dask

    run = f"{uuid.uuid4().hex[:8]}-"
    graphs = []
    for leg in legs:
        shared = dask.delayed(leg, name=f"leg-{run}{label}/{leg.name}", traverse=False)  # shipped once, not per window
        switching = neq and hasattr(leg.states[0], "lambda_ml")
        graphs.append(leg_graph(shared, leg.n_states, protocol, f"{label}/{leg.name}", neq=switching, run=run))
    tasks = [graph_tasks(g) for g in graphs]
    outputs = compute([t for group in tasks for t in group], scheduler, workers, progress, description=label)
    results, start = {}, 0
    for leg, group in zip(legs, tasks):
        results[leg.name] = analyse_leg(leg, outputs[start:start + len(group)], protocol)
        start += len(group)
    return results
