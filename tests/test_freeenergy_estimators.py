"""Free-energy estimators against exact answers, and serial vs Dask reproducibility.

- Switching N particles between two harmonic wells, U = k(lambda)/2 |r - r0|^2 with
  k(lambda) = k0 + lambda (k1 - k0) (a CustomExternalForce on LAMBDA_ML), has the exact
  dG = (3N/2) kT ln(k1/k0); MBAR and the switching estimators must find it within their
  stated uncertainty.
- MM to the same MM (a real OpenFF molecule taken to MM + V and back again by two
  independently sampled legs) has dG = 0.
- The same legs computed serially and on a Dask LocalCluster give identical numbers.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import mlmm  # noqa: F401  (imports torch before openmm)
import openmm

from mlmm.embedding import LAMBDA_ML
from mlmm.freeenergy import (
    Leg, Protocol, SerializedSystem, decoupling_leg, endstate_states, neq_analysis, run_legs,
)

N_PARTICLES, K0, K1 = 4, 100.0, 400.0  # kJ/mol/nm^2


def harmonic_system(energy: str, n_particles: int = N_PARTICLES) -> tuple[openmm.System, np.ndarray]:
    """Free particles (12 amu) each tethered to its own anchor by a LAMBDA_ML-dependent well."""
    anchors = np.random.default_rng(7).uniform(0.0, 1.0, (n_particles, 3))
    force = openmm.CustomExternalForce(f"{energy}*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
    force.addGlobalParameter(LAMBDA_ML, 0.0)
    for name in ("x0", "y0", "z0"):
        force.addPerParticleParameter(name)
    system = openmm.System()
    for i in range(n_particles):
        system.addParticle(12.0)
        force.addParticle(i, anchors[i].tolist())
    system.addForce(force)
    return system, anchors


HARMONIC_PROTOCOL = Protocol.preset("smoke").replace(
    minimization_steps=0, equilibration_steps=500, samples_per_window=200, steps_per_sample=50, friction=5.0,
    endstate_lambdas=(0.0, 0.25, 0.5, 0.75, 1.0), neq_switches=50, neq_steps=1500, seed=11,
)


@pytest.fixture(scope="module")
def harmonic_leg():
    system, anchors = harmonic_system(f"0.5*({K0} + {LAMBDA_ML}*({K1 - K0}))")
    return Leg("harmonic", SerializedSystem.from_system(system), anchors, None,
               endstate_states(HARMONIC_PROTOCOL.endstate_lambdas))


@pytest.fixture(scope="module")
def harmonic_result(harmonic_leg):
    return run_legs([harmonic_leg], HARMONIC_PROTOCOL, neq=True, progress=False)["harmonic"]


def exact_harmonic_dG(kT: float) -> float:
    return 1.5 * N_PARTICLES * kT * np.log(K1 / K0)


def test_mbar_finds_the_exact_harmonic_free_energy(harmonic_result):
    exact = exact_harmonic_dG(HARMONIC_PROTOCOL.kT)
    mbar = harmonic_result.mbar
    assert 0.2 < mbar.dG_error < 3.0
    assert abs(mbar.dG - exact) < 3 * mbar.dG_error, (mbar.dG, mbar.dG_error, exact)
    # the diagnostics describe the data: a K x K stochastic overlap matrix, states in order
    assert mbar.overlap.shape == (5, 5)
    np.testing.assert_allclose(mbar.overlap.sum(axis=1), 1.0, atol=1e-8)
    assert mbar.min_neighbour_overlap > 0.03
    assert [label["lambda_ml"] for label in mbar.state_labels] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert mbar.state_dG[0] == 0.0 and mbar.state_dG[-1] == pytest.approx(mbar.dG)
    # convergence curves: forward and reverse end at the full-data estimate, within noise
    conv = mbar.convergence
    assert len(conv["forward"]) == len(conv["reverse"]) == len(conv["fractions"])
    assert conv["forward"][-1] == pytest.approx(mbar.dG, abs=1e-6)
    assert conv["reverse"][-1] == pytest.approx(mbar.dG, abs=1e-6)
    assert mbar.converged
    assert np.all(mbar.statistical_inefficiency >= 1.0)
    # a CustomExternalForce reports no dU/dlambda, so there is no TI estimate
    assert mbar.dudl_mean is None and mbar.ti_dG is None


def test_switching_estimators_find_the_exact_harmonic_free_energy(harmonic_result):
    exact = exact_harmonic_dG(HARMONIC_PROTOCOL.kT)
    neq = harmonic_result.neq
    assert len(neq.forward_work) == len(neq.reverse_work) == HARMONIC_PROTOCOL.neq_switches
    # second law: mean work dissipates, <W_F> >= dG >= -<W_R>
    assert neq.forward_work.mean() > exact - 1.0 > -neq.reverse_work.mean() - 2.0
    assert abs(neq.bar["value"] - exact) < 3 * neq.bar["error"], (neq.bar, exact)
    # one-sided Jarzynski estimates are biased at finite sample size; they stay within 4 sigma + 1 kT
    for estimate in (neq.jarzynski_forward, neq.jarzynski_reverse):
        assert abs(estimate["value"] - exact) < 4 * estimate["error"] + HARMONIC_PROTOCOL.kT, (estimate, exact)


def test_neq_estimators_on_gaussian_work_with_known_answer():
    """Gaussian work with variance s^2 (kT): Crooks gives dG = <W_F> - s^2/2 exactly."""
    rng = np.random.default_rng(3)
    kT, dG, sigma = 2.5, 7.0, 1.0  # kJ/mol; sigma in kT
    mean_forward = dG / kT + sigma**2 / 2
    w_f = rng.normal(mean_forward, sigma, 4000)
    w_r = rng.normal(-dG / kT + sigma**2 / 2, sigma, 4000)
    result = neq_analysis(w_f, w_r, kT)
    for estimate in (result.bar, result.jarzynski_forward, result.jarzynski_reverse):
        assert abs(estimate["value"] - dG) < 4 * estimate["error"], estimate
    # a constant offset in the work (ML and MM energy zeros) moves every estimate by exactly that offset
    shifted = neq_analysis(w_f + 1e5, w_r - 1e5, kT)
    assert shifted.bar["value"] == pytest.approx(result.bar["value"] + 1e5 * kT, abs=1e-6)
    assert shifted.jarzynski_forward["value"] == pytest.approx(result.jarzynski_forward["value"] + 1e5 * kT, abs=1e-6)


def test_mbar_keeps_precision_with_huge_energies_and_offsets():
    """Decoupled-state samples can put a coupled state's u at 1e25 kT, and ML/MM states sit ~1e5 kT
    from MM ones; neither may cost MBAR its precision."""
    from mlmm.freeenergy.analysis import mbar_analysis
    from mlmm.freeenergy.sampling import WindowSamples

    rng = np.random.default_rng(1)
    offset = -1.2e5  # kT: u_1 = (x - 1)^2 / 2 + offset, u_0 = x^2 / 2, so f_1 - f_0 = offset exactly
    def window(index, x):
        u = np.vstack([x**2 / 2, (x - 1) ** 2 / 2 + offset])
        return WindowSamples("gauss", index, u, None, [], 0.0, 0)
    windows = [window(0, rng.normal(0.0, 1.0, 2000)), window(1, rng.normal(1.0, 1.0, 2000))]
    clean = mbar_analysis(windows, kT=1.0)
    assert clean.dG == pytest.approx(offset, abs=3 * clean.dG_error + 1e-9) and clean.dG_error < 0.1
    windows[1].reduced_potentials[0, 5] = 1e25  # one state-1 sample impossible in state 0
    spiked = mbar_analysis(windows, kT=1.0)
    assert spiked.dG == pytest.approx(clean.dG, abs=0.05)


@pytest.mark.parametrize("gap", [200.0, 5000.0])
def test_states_without_overlap_never_pass_for_an_estimate(gap):
    """Two states ``gap`` kT apart in both directions: pymbar's BAR start cannot bound the answer (in
    pymbar 4.0.3 that surfaced as a NameError). MBAR then either has no finite uncertainty, which is
    a SimulationError naming the cure, or an estimate flagged as not converged, with zero overlap."""
    from mlmm.errors import SimulationError
    from mlmm.freeenergy.analysis import mbar_analysis
    from mlmm.freeenergy.sampling import WindowSamples

    rng = np.random.default_rng(1)
    a, b, noise_a, noise_b = rng.normal(0.0, 1.0, (4, 50))
    windows = [WindowSamples("apart", 0, np.vstack([a, a + gap + noise_a]), None, [], 0.0, 0),
               WindowSamples("apart", 1, np.vstack([b + gap + noise_b, b]), None, [], 0.0, 0)]
    try:
        result = mbar_analysis(windows, kT=1.0)
    except SimulationError as exc:
        assert "overlap too little" in str(exc)
    else:
        assert not result.converged and result.min_neighbour_overlap < 1e-6 and result.dG_error > 1.0


def perturbed_toluene_leg(toluene_vacuum, name: str, scale: str) -> Leg:
    """Toluene (MM, vacuum) plus ``scale`` * V, V pulling every carbon 1-3 pair 0.01 nm apart."""
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(toluene_vacuum.system))
    perturbation = openmm.CustomBondForce(f"({scale})*1000*(r-r0)^2")
    perturbation.addGlobalParameter(LAMBDA_ML, 0.0)
    perturbation.addPerBondParameter("r0")
    carbons = [a.index for a in toluene_vacuum.topology.atoms() if a.element.symbol == "C"]
    neighbours = {i: set() for i in carbons}
    for bond in toluene_vacuum.topology.bonds():
        i, j = bond[0].index, bond[1].index
        if i in neighbours and j in neighbours:
            neighbours[i].add(j)
            neighbours[j].add(i)
    pairs = {tuple(sorted((i, k))) for j in carbons for i in neighbours[j] for k in neighbours[j] if i != k}
    for i, k in sorted(pairs):
        r = np.linalg.norm(toluene_vacuum.positions[i] - toluene_vacuum.positions[k])
        perturbation.addBond(i, k, [r + 0.01])
    system.addForce(perturbation)
    return Leg(name, SerializedSystem.from_system(system), toluene_vacuum.positions, None,
               endstate_states((0.0, 0.25, 0.5, 0.75, 1.0)))


def test_mm_to_the_same_mm_gives_zero(toluene_vacuum):
    """MM -> MM + V -> MM, two independently sampled legs: their sum is zero within error."""
    legs = [perturbed_toluene_leg(toluene_vacuum, "there", LAMBDA_ML),
            perturbed_toluene_leg(toluene_vacuum, "back", f"1-{LAMBDA_ML}")]
    protocol = Protocol.preset("smoke").replace(equilibration_steps=200, samples_per_window=100, steps_per_sample=20,
                                                neq_switches=20, neq_steps=200, seed=5)
    results = run_legs(legs, protocol, neq=True, progress=False)
    there, back = results["there"], results["back"]
    assert there.dG > 5 * there.dG_error  # V costs free energy: the path is not trivial
    cycle, cycle_error = there.dG + back.dG, np.hypot(there.dG_error, back.dG_error)
    assert abs(cycle) < 3 * cycle_error, (there.dG, back.dG, cycle_error)
    bar_cycle = there.neq.bar["value"] + back.neq.bar["value"]
    assert abs(bar_cycle) < 3 * np.hypot(there.neq.bar["error"], back.neq.bar["error"]), (there.neq.bar, back.neq.bar)
    # equilibrium and switching estimates of the same leg agree
    assert abs(there.dG - there.neq.bar["value"]) < 3 * np.hypot(there.dG_error, there.neq.bar["error"])


def test_serial_and_dask_runs_are_identical(harmonic_leg, toluene_vacuum):
    """Same legs, serial and on a two-process LocalCluster: bitwise equal results.

    (Non-periodic systems on the CPU platform and everything on Reference are bitwise
    reproducible; periodic PME on the CPU platform is not, even run to run.)
    """
    protocol = Protocol.preset("smoke").replace(samples_per_window=10, steps_per_sample=10, equilibration_steps=20,
                                                minimization_steps=20, neq_switches=3, neq_steps=10, seed=99)
    legs = [harmonic_leg, decoupling_leg(toluene_vacuum, protocol, name="toluene-vacuum-decoupling")]
    serial = run_legs(legs, protocol, scheduler="serial", neq=True, progress=False)
    distributed = run_legs(legs, protocol, scheduler="local", workers=2, neq=True, progress=False)
    for name in serial:
        assert serial[name].dG == distributed[name].dG
        np.testing.assert_array_equal(serial[name].mbar.overlap, distributed[name].mbar.overlap)
    np.testing.assert_array_equal(serial["harmonic"].neq.forward_work, distributed["harmonic"].neq.forward_work)
    # and a different seed gives different samples
    other = run_legs(legs[:1], protocol.replace(seed=100), neq=False, progress=False)
    assert other["harmonic"].dG != serial["harmonic"].dG


def test_mm_window_without_the_ml_group_samples_the_same(toluene_vacuum, monkeypatch):
    """The lambda_ml = 0 window leaves the ML group out of its dynamics; with the (zero) group
    kept in, the same seed gives bitwise the same samples (Reference platform, AIMNet2)."""
    from mlmm.freeenergy import endstate_leg, sampling

    protocol = Protocol.preset("smoke").replace(platform="Reference", minimization_steps=5, equilibration_steps=10,
                                                samples_per_window=4, steps_per_sample=5, endstate_lambdas=(0.0, 1.0))
    leg = endstate_leg(toluene_vacuum, "aimnet2", "mechanical", protocol)
    assert sampling.integration_groups(leg.create_system(), leg.states[0]) is not None
    fast = sampling.sample_window(leg, 0, protocol, seed=11, n_snapshots=2)
    monkeypatch.setattr(sampling, "integration_groups", lambda system, state: None)
    full = sampling.sample_window(leg, 0, protocol, seed=11, n_snapshots=2)
    np.testing.assert_array_equal(fast.reduced_potentials, full.reduced_potentials)
    np.testing.assert_array_equal(fast.dudl, full.dudl)
    np.testing.assert_array_equal(fast.snapshots[-1][0], full.snapshots[-1][0])


def test_problems_name_the_states_that_overlap_too_little(harmonic_result):
    mbar = harmonic_result.mbar
    assert mbar.converged and mbar.problems() == []
    overlap = mbar.overlap.copy()
    overlap[1, 2] = overlap[2, 1] = 0.004
    problems = replace(mbar, overlap=overlap, halves_agree=False).problems()
    assert problems == [
        "states lambda_ml=0.25 and lambda_ml=0.5 overlap by 0.004 (< 0.03): add windows between them",
        "the first and second halves of the samples disagree: sample longer (more steps per window)",
    ]
