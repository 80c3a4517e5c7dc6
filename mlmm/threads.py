"""PyTorch's threads on the CPU: chosen by timing the dynamics itself.

On OpenMM's CPU platform the MM forces run on OpenMM's thread pool and the TorchForce runs
the ML model on PyTorch's intra-op threads, on the same cores, one after the other within a
step. Whether a second PyTorch thread helps depends on what else the cores are doing:

- on cores this run has to itself, OpenMM's threads sleep while the model runs and the
  model's matrix products (oneDNN) split over two cores: an MTS outer step of toluene-water
  took 8.1-8.9 ms with two PyTorch threads against 10.1-10.8 ms with one (2 cores,
  2026-12-07, with the short spin that ``import mlmm`` gives waiting threads,
  ``GOMP_SPINCOUNT=10000``);
- with another busy process on the same cores the second thread waits for a core at every
  product: one model call took 29.4 ms with two threads against 4.5 ms with one
  (``scripts/profile_threads.py``).

No fixed count is right on both, so :class:`TorchThreadTuner` times short blocks of the
run's own steps with each candidate count (1, 2, 4, ... up to OpenMM's thread count),
interleaved, runs on with the fastest, times every block after that, and probes again when
a block is markedly slower than the probe said or two minutes after it. What a probe costs
is bounded by its blocks (a few tenths of a second per candidate); what a change of load
costs is bounded by one block. :func:`torch_thread_tuner` makes the tuner for a Context;
``mlmm run``, ``mlmm stability``, free-energy tasks and ``mlmm bench`` step through it.

``MLMM_TORCH_THREADS`` overrides the choice: a number fixes the count (bitwise-reproducible
runs need a fixed count, as PyTorch's sums may round differently with more threads),
``auto`` is the default. GPU platforms leave PyTorch's setting alone (the model runs on the
GPU).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import openmm
import torch

from .errors import InputError
from .platforms import CPU_PLATFORMS

#: environment variable that sets PyTorch's intra-op threads for mlmm simulations
TORCH_THREADS_VARIABLE = "MLMM_TORCH_THREADS"
#: its value (and the default) for a count chosen by timing
AUTO = "auto"


def thread_candidates(max_threads: int) -> tuple[int, ...]:
    """Thread counts worth trying with ``max_threads`` cores: 1, 2, 4, ... and ``max_threads`` itself."""
    counts, count = [], 1
    while count < max_threads:
        counts.append(count)
        count *= 2
    return tuple(counts) + (max(1, int(max_threads)),)


def parse_torch_threads(text: str, source: str) -> int | str:
    """A positive thread count or :data:`AUTO` from ``text``; :class:`InputError` naming ``source`` otherwise."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise InputError(f"{source} must be a positive whole number of threads or {AUTO!r} (chosen by timing, "
                         "the default).")
    return count


def requested_torch_threads() -> int | str:
    """``MLMM_TORCH_THREADS`` as a positive count or :data:`AUTO` (also when unset)."""
    text = os.environ.get(TORCH_THREADS_VARIABLE, AUTO)
    return parse_torch_threads(text, f"{TORCH_THREADS_VARIABLE}={text!r}")


def torch_thread_tuner(context: openmm.Context, requested: int | str | None = None) -> TorchThreadTuner:
    """The tuner for dynamics of ``context``, with PyTorch's thread count set to its first candidate.

    ``requested``: a count, :data:`AUTO`, or None for ``MLMM_TORCH_THREADS``. On a GPU
    platform PyTorch's own setting is kept; on the Reference platform (one thread), for a
    System without PyTorch (pure MM) and for a fixed count there is one candidate and nothing
    to time.
    """
    requested = requested_torch_threads() if requested is None else requested
    platform = context.getPlatform()
    if requested != AUTO:
        candidates = (int(requested),)
    elif platform.getName() not in CPU_PLATFORMS:
        candidates = (torch.get_num_threads(),)
    elif platform.getName() == "CPU" and runs_pytorch(context.getSystem()):
        candidates = thread_candidates(int(platform.getPropertyValue(context, "Threads")))
    else:
        candidates = (1,)
    tuner = TorchThreadTuner(candidates)
    tuner.apply()
    return tuner


def runs_pytorch(system: openmm.System) -> bool:
    """Whether ``system`` calls PyTorch: a ``TorchForce`` (also as a ``CustomCVForce`` variable) or a ``PythonForce``."""
    import openmmtorch

    def calls_torch(force) -> bool:
        return openmmtorch.TorchForce.isinstance(force) or isinstance(force, openmm.PythonForce)

    for force in system.getForces():
        if calls_torch(force):
            return True
        if isinstance(force, openmm.CustomCVForce):
            if any(calls_torch(force.getCollectiveVariable(i)) for i in range(force.getNumCollectiveVariables())):
                return True
    return False


@dataclass
class Probe:
    """One probe's result: when it ended (the tuner's clock, s), ms per step of each candidate, the choice."""

    ended_s: float
    ms_per_step: dict[int, float]
    chosen: int


@dataclass
class _ProbeBlock:
    """A probe block still to run: ``steps`` left with ``threads`` (None: sized at its start), timed or a warm-up."""

    threads: int
    steps: int | None
    timed: bool


@dataclass
class TorchThreadTuner:
    """Steps an integrator with the PyTorch intra-op thread count that is fastest now.

    Times are seconds of wall clock.

    Parameters
    ----------
    candidates:
        thread counts to choose from, fewest first; with one there is nothing to probe.
    probe_seconds:
        length of each timed probe block; the first probe sizes its blocks from one untimed
        warm-up step per candidate.
    rounds:
        timed probe blocks per candidate, interleaved; a candidate's median decides.
    tolerance:
        the fewest threads whose median is within this fraction of the fastest median are
        chosen (fewer threads leave cores to everything else).
    reprobe_seconds:
        time after a probe when the next one starts.
    slowdown:
        a block slower per step than this factor times the chosen count's probe median starts
        a new probe (the load on the cores changed).
    max_block_seconds:
        longest block between two checks.
    clock:
        the wall clock (``time.perf_counter``).

    Attributes
    ----------
    threads:
        the count the dynamics runs with now.
    probes:
        every finished :class:`Probe`, oldest first.
    """

    candidates: Sequence[int]
    probe_seconds: float = 0.25
    rounds: int = 3
    tolerance: float = 0.03
    reprobe_seconds: float = 120.0
    slowdown: float = 1.5
    max_block_seconds: float = 5.0
    clock: Callable[[], float] = time.perf_counter
    probes: list[Probe] = field(default_factory=list)

    def __post_init__(self):
        self.candidates = tuple(sorted({int(count) for count in self.candidates}))
        if not self.candidates or min(self.candidates) < 1:
            raise InputError(f"thread candidates {self.candidates!r} must be one or more positive counts.")
        self.threads = self.candidates[0]
        self._plan: list[_ProbeBlock] = []  # the running probe's blocks still to run
        self._samples: dict[int, list[float]] = {}  # s per step of each candidate's timed blocks
        self._warmup_s: list[float] = []  # s per step of the first probe's warm-up steps
        self._probe_now = True  # before the first step (never with one candidate: see _probe_due)

    def apply(self) -> None:
        """Set PyTorch's intra-op threads to the current count."""
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def step(self, integrator: openmm.Integrator, steps: int) -> None:
        """Advance ``integrator`` by exactly ``steps`` steps, probing and switching counts as due."""
        steps = int(steps)
        while steps > 0:
            if not self._plan and self._probe_due():
                self._plan = self._probe_plan()
            steps -= self._probe_block(integrator, steps) if self._plan else self._block(integrator, steps)

    def tune(self, integrator: openmm.Integrator) -> None:
        """Run a whole probe now, as many steps as it takes, and settle on a count."""
        if len(self.candidates) > 1:
            self._plan = self._probe_plan()
            while self._plan:
                self._probe_block(integrator, available=1 << 62)

    # ------------------------------------------------------------------ internals
    @property
    def _reference_s(self) -> float | None:
        """Seconds per step of the chosen count in the last probe; None before the first."""
        if not self.probes:
            return None
        last = self.probes[-1]
        return 1e-3 * last.ms_per_step[last.chosen]

    def _probe_due(self) -> bool:
        if len(self.candidates) == 1:
            return False
        return self._probe_now or self.clock() - self.probes[-1].ended_s >= self.reprobe_seconds

    def _probe_plan(self) -> list[_ProbeBlock]:
        self._probe_now = False
        self._samples = {count: [] for count in self.candidates}
        warmups = [_ProbeBlock(count, 1, False) for count in self.candidates] if self._reference_s is None else []
        timed = [_ProbeBlock(count, None, True) for _ in range(self.rounds) for count in self.candidates]
        return warmups + timed

    def _probe_block(self, integrator, available: int) -> int:
        block = self._plan[0]
        if block.steps is None:
            block.steps = self._probe_steps()
        taken = min(block.steps, available)
        self.threads = block.threads
        seconds = self._timed_steps(integrator, taken)
        (self._samples[block.threads] if block.timed else self._warmup_s).append(seconds / taken)
        block.steps -= taken
        if block.steps == 0:
            self._plan.pop(0)
            if not self._plan:
                self._choose()
        return taken

    def _probe_steps(self) -> int:
        per_step = self._reference_s if self._reference_s is not None else min(self._warmup_s)
        return max(1, round(self.probe_seconds / max(per_step, 1e-9)))

    def _choose(self) -> None:
        medians = {count: statistics.median(self._samples[count]) for count in self.candidates}
        fastest = min(medians.values())
        self.threads = next(count for count in self.candidates if medians[count] <= fastest * (1 + self.tolerance))
        self.apply()
        self.probes.append(Probe(self.clock(), {count: 1e3 * value for count, value in medians.items()}, self.threads))

    def _block(self, integrator, available: int) -> int:
        steps = available
        if self._reference_s is not None:
            steps = min(available, max(1, int(self.max_block_seconds / max(self._reference_s, 1e-9))))
        seconds = self._timed_steps(integrator, steps)
        if self._reference_s is not None and seconds / steps > self.slowdown * self._reference_s:
            self._probe_now = True
        return steps

    def _timed_steps(self, integrator, steps: int) -> float:
        self.apply()
        started = self.clock()
        integrator.step(steps)
        return self.clock() - started
