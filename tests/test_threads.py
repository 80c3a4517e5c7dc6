"""PyTorch threads for simulations on the CPU (mlmm.threads).

The tuner's decisions are tested against :class:`ScriptedDynamics`, an integrator stand-in
whose cost per step depends on PyTorch's thread count and which advances a clock the test
controls: a real Context's timings cannot be made to differ on demand. The thread settings
of real Contexts and a probe of real ML/MM dynamics are tested as well.
"""

from __future__ import annotations

import os
import subprocess
import sys

import openmm
import openmmtorch
import pytest
import torch

from mlmm import InputError
from mlmm.embedding.mixed import create_mixed_system
from mlmm.freeenergy.protocol import Protocol
from mlmm.freeenergy.sampling import create_context
from mlmm.splitting import make_integrator
from mlmm.threads import (AUTO, TORCH_THREADS_VARIABLE, TorchThreadTuner, requested_torch_threads, runs_pytorch,
                          thread_candidates, torch_thread_tuner)
from mlmm.torchscript_execution import unoptimized_torchscript


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class ScriptedDynamics:
    """An integrator stand-in: ``step(n)`` costs ``n * seconds_per_step[threads]`` on its clock."""

    def __init__(self, seconds_per_step: dict[int, float]):
        self.seconds_per_step = dict(seconds_per_step)
        self.now = 0.0
        self.steps = 0
        self.calls: list[tuple[int, int]] = []  # (thread count, steps) of each step() call

    def clock(self) -> float:
        return self.now

    def step(self, steps: int) -> None:
        threads = torch.get_num_threads()
        self.now += steps * self.seconds_per_step[threads]
        self.steps += steps
        self.calls.append((threads, steps))

    def steps_with(self, threads: int) -> int:
        return sum(steps for count, steps in self.calls if count == threads)


def tuner_for(dynamics: ScriptedDynamics, **options) -> TorchThreadTuner:
    return TorchThreadTuner((1, 2), clock=dynamics.clock, **options)


def test_thread_candidates_double_up_to_the_core_count():
    assert thread_candidates(1) == (1,)
    assert thread_candidates(2) == (1, 2)
    assert thread_candidates(6) == (1, 2, 4, 6)
    assert thread_candidates(8) == (1, 2, 4, 8)


def test_environment_variable(monkeypatch):
    monkeypatch.delenv(TORCH_THREADS_VARIABLE, raising=False)
    assert requested_torch_threads() == AUTO
    monkeypatch.setenv(TORCH_THREADS_VARIABLE, "Auto")
    assert requested_torch_threads() == AUTO
    monkeypatch.setenv(TORCH_THREADS_VARIABLE, "2")
    assert requested_torch_threads() == 2
    for bad in ("zero", "0", "-1", "1.5"):
        monkeypatch.setenv(TORCH_THREADS_VARIABLE, bad)
        with pytest.raises(InputError, match=f"{TORCH_THREADS_VARIABLE}.*positive whole number.*auto"):
            requested_torch_threads()


def test_probe_takes_exactly_the_steps_asked_for_and_picks_the_faster_count():
    dynamics = ScriptedDynamics({1: 0.010, 2: 0.007})
    tuner = tuner_for(dynamics)
    for steps in (1, 3, 7, 1, 50, 2, 500, 1000):  # small calls split the probe's blocks across calls
        before = dynamics.steps
        tuner.step(dynamics, steps)
        assert dynamics.steps - before == steps
    (probe,) = tuner.probes
    assert probe.chosen == tuner.threads == 2 and torch.get_num_threads() == 2
    assert probe.ms_per_step == pytest.approx({1: 10.0, 2: 7.0})
    # after the probe: blocks of at most max_block_seconds at the chosen count's speed
    assert dynamics.calls[-1] == (2, 1000 - int(tuner.max_block_seconds / 0.007))


def test_probe_blocks_interleave_the_counts_and_last_probe_seconds():
    dynamics = ScriptedDynamics({1: 0.010, 2: 0.007})
    tuner = tuner_for(dynamics)
    tuner.tune(dynamics)
    block = round(tuner.probe_seconds / 0.007)  # sized from the faster warm-up step
    assert dynamics.calls == [(1, 1), (2, 1)] + [(1, block), (2, block)] * tuner.rounds


@pytest.mark.parametrize("costs, expected", [({1: 0.010, 2: 0.030}, 1),  # a second thread waits for a busy core
                                             ({1: 0.010, 2: 0.0099}, 1)])  # within the tolerance: fewer threads
def test_more_threads_must_be_clearly_faster(costs, expected):
    dynamics = ScriptedDynamics(costs)
    tuner = tuner_for(dynamics)
    tuner.tune(dynamics)
    assert tuner.threads == expected and torch.get_num_threads() == expected


def test_a_slowdown_starts_a_new_probe_within_one_block():
    dynamics = ScriptedDynamics({1: 0.010, 2: 0.007})
    tuner = tuner_for(dynamics, max_block_seconds=1.0)
    tuner.step(dynamics, 2000)
    assert tuner.threads == 2
    dynamics.seconds_per_step[2] = 0.050  # another process now holds the second core
    slow_before = dynamics.steps_with(2)
    tuner.step(dynamics, 2000)
    assert len(tuner.probes) == 2 and tuner.threads == 1
    # at the slow count: one block of at most max_block_seconds at the old speed, then the probe's own blocks
    probe_blocks = tuner.rounds * round(tuner.probe_seconds / 0.007)
    assert dynamics.steps_with(2) - slow_before <= round(1.0 / 0.007) + probe_blocks


def test_probes_again_after_reprobe_seconds():
    dynamics = ScriptedDynamics({1: 0.010, 2: 0.030})
    tuner = tuner_for(dynamics, reprobe_seconds=60.0)
    tuner.step(dynamics, 1000)
    assert tuner.threads == 1
    dynamics.seconds_per_step[2] = 0.007  # the other process finished
    tuner.step(dynamics, 1000)  # 10 s: no probe yet
    assert len(tuner.probes) == 1
    tuner.step(dynamics, 6000)
    assert len(tuner.probes) == 2 and tuner.threads == 2


def test_one_candidate_is_a_fixed_count_stepped_in_one_call():
    dynamics = ScriptedDynamics({3: 0.01})
    tuner = TorchThreadTuner((3,), clock=dynamics.clock)
    tuner.step(dynamics, 1234)
    tuner.tune(dynamics)
    assert dynamics.calls == [(3, 1234)] and not tuner.probes


class _Harmonic(torch.nn.Module):
    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return (positions**2).sum()


def one_particle_system(with_torch: bool) -> openmm.System:
    """One particle; with a harmonic ``TorchForce`` on it when ``with_torch``."""
    system = openmm.System()
    system.addParticle(1.0)
    if with_torch:
        system.addForce(openmmtorch.TorchForce(torch.jit.script(_Harmonic())))
    return system


def test_systems_that_call_pytorch_are_recognised():
    assert runs_pytorch(one_particle_system(with_torch=True))
    assert not runs_pytorch(one_particle_system(with_torch=False))
    collective = one_particle_system(with_torch=False)
    cv = openmm.CustomCVForce("2*x")
    cv.addCollectiveVariable("x", openmmtorch.TorchForce(torch.jit.script(_Harmonic())))
    collective.addForce(cv)
    assert runs_pytorch(collective)
    host_copy = one_particle_system(with_torch=False)
    host_copy.addForce(openmm.PythonForce(lambda state: (0.0, [[0.0, 0.0, 0.0]])))
    assert runs_pytorch(host_copy)


def test_contexts_get_candidates_up_to_openmm_threads(monkeypatch):
    monkeypatch.delenv(TORCH_THREADS_VARIABLE, raising=False)
    cpu = openmm.Platform.getPlatformByName("CPU")
    for openmm_threads, with_torch, candidates in ((2, True, (1, 2)), (1, True, (1,)), (2, False, (1,))):
        torch.set_num_threads(2)
        context = openmm.Context(one_particle_system(with_torch), openmm.VerletIntegrator(0.001), cpu,
                                 {"Threads": str(openmm_threads)})
        tuner = torch_thread_tuner(context)
        assert tuner.candidates == candidates and torch.get_num_threads() == 1
    reference = openmm.Context(one_particle_system(True), openmm.VerletIntegrator(0.001),
                               openmm.Platform.getPlatformByName("Reference"))
    assert torch_thread_tuner(reference).candidates == (1,)
    monkeypatch.setenv(TORCH_THREADS_VARIABLE, "3")
    assert torch_thread_tuner(reference).candidates == (3,) and torch.get_num_threads() == 3


def test_free_energy_tasks_give_torch_at_most_openmm_threads(monkeypatch):
    """A free-energy task's tuner chooses among 1 and its OpenMM thread count, starting from one."""
    monkeypatch.delenv(TORCH_THREADS_VARIABLE, raising=False)
    torch.set_num_threads(2)
    system = one_particle_system(with_torch=True)
    protocol = Protocol.load("smoke").replace(platform="CPU", threads=2)
    context, threads = create_context(system, openmm.VerletIntegrator(0.001), protocol)
    assert context.getPlatform().getPropertyValue(context, "Threads") == "2"
    assert threads.candidates == (1, 2) and torch.get_num_threads() == 1
    context, threads = create_context(system, openmm.VerletIntegrator(0.001), protocol.replace(threads=1))
    assert threads.candidates == (1,)


def test_probe_of_ml_mm_dynamics(toluene_water, monkeypatch):
    """A whole probe of real MTS dynamics with a TorchForce: both counts timed, the chosen one set."""
    monkeypatch.delenv(TORCH_THREADS_VARIABLE, raising=False)
    mixed = create_mixed_system(toluene_water)
    context = openmm.Context(mixed.system, make_integrator(300, 1, 0.002, 2, seed=1),
                             openmm.Platform.getPlatformByName("CPU"), {"Threads": "2"})
    context.setPositions(toluene_water.positions)
    tuner = torch_thread_tuner(context)
    tuner.probe_seconds = 0.02
    with unoptimized_torchscript("CPU"):
        tuner.tune(context.getIntegrator())
    (probe,) = tuner.probes
    assert set(probe.ms_per_step) == {1, 2} and all(ms > 0 for ms in probe.ms_per_step.values())
    assert torch.get_num_threads() == tuner.threads == probe.chosen
    after_probe = context.getState().getTime()
    with unoptimized_torchscript("CPU"):
        tuner.step(context.getIntegrator(), 3)
    assert (context.getState().getTime() - after_probe).value_in_unit(openmm.unit.picosecond) == pytest.approx(0.012)


def test_import_sets_passive_waiting_with_a_short_spin():
    """``import mlmm`` sets GNU OpenMP's wait policy and spin before torch loads, unless the user set them."""
    code = "import os, mlmm; print(os.environ['OMP_WAIT_POLICY'], os.environ['GOMP_SPINCOUNT'])"
    environment = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    default = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True)
    assert default.stdout.split() == ["PASSIVE", "10000"]
    environment["GOMP_SPINCOUNT"] = "0"
    chosen = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True)
    assert chosen.stdout.split() == ["PASSIVE", "0"]
