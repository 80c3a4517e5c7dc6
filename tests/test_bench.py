"""``mlmm bench``: a tiny run writes a well-formed report and plot; the two ML paths agree.

Speed itself is never asserted here: it is what ``mlmm bench`` reports.
"""

from __future__ import annotations

import json
import math
import re
import time

import numpy as np
import openmm
import pytest
import torch

from mlmm import InputError, MolecularSystem, SimulationError
from mlmm.bench import DEFAULT_MTS_FACTOR, BenchmarkSettings, compare_forces, create_host_copy_system, ns_per_day
from mlmm.bench import timing
from mlmm.bench.harness import ROWS, _mixed_system, benchmark_system
from mlmm.cli import main
from mlmm.embedding import LAMBDA_ML
from mlmm.embedding.mixed import create_mixed_system
from mlmm.forcegroups import ML_SLOW, group_mask

RATIOS = ("mts_vs_mm", "torchforce_vs_mm", "torchforce_vs_pythonforce", "bridge_overhead_fraction",
          "torchforce_call_overhead_fraction", "mm_region_share_of_slow_group", "mm_region_share_of_mts_step")


@pytest.fixture(scope="module")
def tiny_report(toluene_water_dir, tmp_path_factory):
    """A run of every row on toluene-water with 2 steps per block and 2 blocks."""
    out = tmp_path_factory.mktemp("bench")
    argv = ["bench", "--systems", str(toluene_water_dir), "--steps", "4", "--repeats", "2", "--warmup", "1",
            "--minimize-iterations", "10", "--threads", "1", "--torch-threads", "1", "--no-progress",
            "--json", str(out / "bench.json"), "--plot", str(out / "bench.png")]
    assert main(argv) == 0
    return out, json.loads((out / "bench.json").read_text())


def test_report_is_well_formed(tiny_report):
    out, report = tiny_report
    assert set(report) == {"machine", "settings", "systems"}
    assert report["machine"]["openmm_cpu_threads"] == 1 and report["machine"]["torch_threads"] == 1
    (entry,) = report["systems"].values()
    assert entry["torch_threads"] == {"setting": 1, "used_at_end": 1, "probes": []}
    assert entry["n_atoms"] > entry["region_atoms"] == 15
    assert list(entry["rows"]) == list(ROWS)
    dt = report["settings"]["inner_timestep"]
    for row, values in entry["rows"].items():
        assert values["ms_per_step"] > 0 and math.isfinite(values["ms_per_step"]), row
        assert values["cpu_ms_per_step"] > 0, row
        assert values["ns_per_day"] == pytest.approx(ns_per_day(values["ms_per_step"], dt)), row
        assert values["ms_per_step"] == pytest.approx(float(np.median(values["samples_ms_per_step"]))), row
        assert len(values["samples_ms_per_step"]) == 2
    mts = entry["rows"]["mts"]
    assert mts["mts_factor"] == DEFAULT_MTS_FACTOR
    assert mts["ms_per_outer_step"] == pytest.approx(DEFAULT_MTS_FACTOR * mts["ms_per_step"])
    rows, ratios = entry["rows"], entry["ratios"]
    assert set(ratios) == set(RATIOS) and all(ratios[name] is not None for name in RATIOS)
    assert ratios["mts_vs_mm"] == pytest.approx(rows["mts"]["ns_per_day"] / rows["mm"]["ns_per_day"])
    assert ratios["torchforce_vs_pythonforce"] == pytest.approx(
        rows["torchforce"]["ns_per_day"] / rows["pythonforce"]["ns_per_day"])
    assert ratios["bridge_overhead_fraction"] == pytest.approx(
        (rows["torchforce"]["ms_per_step"] - rows["mm"]["ms_per_step"] - rows["model"]["ms_per_step"])
        / rows["model"]["ms_per_step"])
    assert set(entry["ratios_cpu"]) == set(RATIOS)
    assert entry["ratios_cpu"]["mts_vs_mm"] == pytest.approx(rows["mm"]["cpu_ms_per_step"] / rows["mts"]["cpu_ms_per_step"])
    breakdown = entry["breakdown_ms_per_evaluation"]
    assert set(breakdown) == {"empty", "mm", "ml_torchforce", "mm_region", "model"}
    assert ratios["torchforce_call_overhead_fraction"] == pytest.approx(
        (breakdown["ml_torchforce"] - breakdown["empty"] - breakdown["model"]) / breakdown["model"])
    region, ml = breakdown["mm_region"] - breakdown["empty"], breakdown["ml_torchforce"] - breakdown["empty"]
    assert ratios["mm_region_share_of_slow_group"] == pytest.approx(region / (region + ml))
    assert ratios["mm_region_share_of_mts_step"] == pytest.approx(
        region / (rows["mts"]["ms_per_step"] * rows["mts"]["mts_factor"]))
    assert set(entry["breakdown_cpu_ms_per_evaluation"]) == set(entry["breakdown_ms_per_evaluation"])
    png = (out / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_report_paths_agree(tiny_report):
    """The consistency check inside the run: TorchForce and PythonForce give the same ML correction."""
    _, report = tiny_report
    (entry,) = report["systems"].values()
    check = entry["consistency"]
    assert check["max_force_kj_mol_nm"] > 100  # a real force field was compared, not zeros
    assert check["energy_difference_kj_mol"] < 1e-3
    assert check["max_force_difference_kj_mol_nm"] < 1e-2


def test_host_copy_matches_torchforce_across_the_box_edge(toluene_water_dir):
    """Same slow-group energy and forces from both paths, with the ligand's atoms in different periodic
    images (each path must make it whole) and at lambda_ml = 0.6 (Reference platform)."""
    molecular_system = MolecularSystem.load(toluene_water_dir)
    torch_mixed = create_mixed_system(molecular_system)
    host_system = create_host_copy_system(create_mixed_system(molecular_system))
    assert not any(f.getName() == "MLRegion" for f in host_system.getForces())
    platform = openmm.Platform.getPlatformByName("Reference")
    contexts = [openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
                for system in (torch_mixed.system, host_system)]
    box = molecular_system.box_vectors
    positions = molecular_system.positions.copy()
    region = torch_mixed.region
    positions[region[::2]] += box[0] + box[2]  # every other ligand atom to an image: the molecule looks broken
    for context in contexts:
        context.setPositions(positions)
        context.setParameter(LAMBDA_ML, 0.6)
    result = compare_forces(*contexts, groups=group_mask(ML_SLOW))
    assert result["energy_difference_kj_mol"] < 1e-3
    assert result["max_force_difference_kj_mol_nm"] < 1e-2 * max(1.0, result["max_force_kj_mol_nm"] / 1e3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_host_copy_moves_the_model_to_the_gpu():
    """The callback computes where the positions are copied, so the model's weights must be there too
    (AIMNet2's weights stayed on the CPU before, and every call on a GPU failed). Methane, nm."""
    from mlmm.bench.host_copy import HostCopyRegionPotential
    from mlmm.potentials import load_plugin

    positions = torch.tensor([[0.0, 0.0, 0.0], [0.109, 0.0, 0.0], [-0.036, 0.103, 0.0], [-0.036, -0.051, 0.089],
                              [-0.036, -0.051, -0.089]], dtype=torch.float64)
    model = load_plugin("aimnet2").create_model([6, 1, 1, 1, 1], 0)
    on_cpu = model(positions)["energy"].item()
    potential = HostCopyRegionPotential(model, periodic=False, device="cuda")
    assert potential.region_model(positions.cuda())["energy"].item() == pytest.approx(on_cpu, rel=1e-6)


def test_ns_per_day():
    # 2 fs per 1 ms: 2e-6 ns per step, 8.64e7 steps a day
    assert ns_per_day(1.0, 0.002) == pytest.approx(172.8)


class _Harmonic(torch.nn.Module):
    """A region model in the shape the timers call: positions (n, 3) nm -> {"energy": kJ/mol}."""

    def forward(self, positions):
        return {"energy": (positions * positions).sum()}


def test_the_work_before_each_timed_call_is_called_and_not_timed():
    # the benchmark evaluates the MM forces before each model call and breakdown evaluation;
    # here a 0.1 s pause stands for them: it must run once per call and stay out of the time
    calls = []

    def pause():
        calls.append(1)
        time.sleep(0.1)

    timed = timing.time_model_calls(_Harmonic(), torch.ones(3, 3, dtype=torch.float64), 3, before=pause)
    assert len(calls) == 3 and timed.wall_ms < 50.0
    system = openmm.System()
    system.addParticle(1.0)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions([openmm.Vec3(0, 0, 0)])
    timed = timing.time_evaluations(context, -1, 2, before=pause)
    assert len(calls) == 5 and timed.wall_ms < 50.0
    assert timing.time_model_calls(_Harmonic(), torch.ones(3, 3, dtype=torch.float64), 2).wall_ms > 0.0


@pytest.mark.parametrize("options, named", [
    ({"steps": 0}, "steps = 0"), ({"repeats": 2.5}, "repeats = 2.5"), ({"rows": ("mm", "fast")}, "rows"),
    ({"threads": 0}, "threads = 0"), ({"inner_timestep": -0.002}, "inner_timestep = -0.002"),
    ({"torch_threads": 0}, "torch_threads = 0 must be an integer >= 1, 'auto' or None"),
    ({"torch_threads": "many"}, "torch_threads = 'many'"),
    ({"platform": "Quantum"}, "platform = 'Quantum' is not available here; available: Reference, CPU"),
    ({"embedding": "quantum"}, "embedding = 'quantum' is unknown; choose one of mechanical, electrostatic"),
    ({"embedding": "electrostatic", "rows": ("mm", "pythonforce")},
     "the pythonforce row (the host-copy path, as openmm-ml) has mechanical embedding only, not electrostatic; "
     "leave it out (rows mm torchforce mts model)"),
])
def test_bad_settings_are_refused(options, named):
    with pytest.raises(InputError, match=re.escape(named)):
        BenchmarkSettings(**options).validate()


def test_cli_refuses_bad_input_before_working(tmp_path, capsys):
    assert main(["bench", "--systems", "no-such-system", "--no-progress"]) == 2
    assert "no-such-system" in capsys.readouterr().err
    assert main(["bench", "--plot", str(tmp_path / "bench.xyz"), "--no-progress"]) == 2
    assert "xyz" in capsys.readouterr().err
    assert main(["bench", "--model-option", "member", "--no-progress"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--torch-threads", "0", "--no-progress"])
    assert "--torch-threads '0' must be a positive whole number of threads or 'auto'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_electrostatic_embedding_is_benchmarked_without_the_host_copy_row(toluene_water_dir, tmp_path):
    """``--embedding electrostatic``: every row but pythonforce (which has mechanical embedding only),
    and the TorchForce of the ML/MM rows is the electrostatic one: its slow group differs from the
    mechanical one's by the coupling of the ligand's charges to the water's."""
    assert BenchmarkSettings(embedding="electrostatic").rows == ("mm", "torchforce", "mts", "model")
    argv = ["bench", "--systems", str(toluene_water_dir), "--embedding", "electrostatic", "--steps", "2",
            "--repeats", "1", "--warmup", "1", "--minimize-iterations", "0", "--threads", "1", "--no-progress",
            "--json", str(tmp_path / "b.json")]
    assert main(argv) == 0
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["settings"]["embedding"] == "electrostatic"
    (entry,) = report["systems"].values()
    assert list(entry["rows"]) == ["mm", "torchforce", "mts", "model"]
    assert entry["ratios"]["torchforce_vs_pythonforce"] is None and entry["ratios"]["mts_vs_mm"] > 0
    assert entry["consistency"] == {}

    molecular_system = MolecularSystem.load(toluene_water_dir)
    largest_slow_force_on_water = {}
    for embedding in ("mechanical", "electrostatic"):
        mixed = _mixed_system(molecular_system, BenchmarkSettings(embedding=embedding))
        assert mixed.embedding == embedding
        environment = np.setdiff1d(np.arange(molecular_system.n_atoms), mixed.region)
        context = openmm.Context(mixed.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
        context.setPositions(molecular_system.positions)
        forces = context.getState(getForces=True, groups=group_mask(ML_SLOW)).getForces(asNumpy=True).value_in_unit(
            openmm.unit.kilojoule_per_mole / openmm.unit.nanometer)
        largest_slow_force_on_water[embedding] = float(np.abs(forces[environment]).max())
    assert largest_slow_force_on_water["mechanical"] == 0.0
    assert largest_slow_force_on_water["electrostatic"] > 1.0


def test_model_options_reach_the_plugin(toluene_water_dir, tmp_path):
    """``--model-option`` selects one ANI-2x network (real architecture, GENERATED weights: the
    pretrained ones cannot be downloaded here); the options are recorded in the report."""
    pytest.importorskip("torchani", reason="package torchani not installed (pip install 'mlmm[models]')")
    from generated_models import save_generated_ani2x

    weights = save_generated_ani2x(tmp_path / "ani2x_generated.pt", seed=0)
    argv = ["bench", "--systems", str(toluene_water_dir), "--rows", "model", "--steps", "2", "--repeats", "1",
            "--warmup", "1", "--minimize-iterations", "0", "--no-progress", "--model", "ani2x",
            "--model-option", f"weights={weights}", "--model-option", "member=0", "--json", str(tmp_path / "b.json")]
    assert main(argv) == 0
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["settings"]["model"] == "ani2x"
    assert report["settings"]["model_options"] == {"weights": str(weights), "member": 0}
    (entry,) = report["systems"].values()
    assert entry["rows"]["model"]["ms_per_step"] > 0


def test_a_bad_model_option_fails_before_minimization(toluene_water):
    settings = BenchmarkSettings(model="aimnet2", model_options={"member": 9}, rows=("model",),
                                 minimize_iterations=10**6)
    with pytest.raises(InputError, match="member 9"):
        benchmark_system(toluene_water, settings)


def test_a_row_whose_dynamics_blow_up_is_named(toluene_water):
    """50 fs steps tear the MM system apart: the error names the row instead of an OpenMM traceback."""
    settings = BenchmarkSettings(rows=("mm",), inner_timestep=0.05, steps=20, repeats=1, warmup=50,
                                 minimize_iterations=0)
    with pytest.raises(SimulationError, match="the mm row on toluene-water"):
        benchmark_system(toluene_water, settings, "toluene-water")


def test_auto_threads_probe_the_mts_dynamics_and_run_every_row_with_the_choice(toluene_water_dir, monkeypatch):
    """The default ``torch_threads="auto"`` with two OpenMM threads: one probe of the mts row, both counts timed."""
    from mlmm.bench.harness import resolve_system
    from mlmm.threads import TORCH_THREADS_VARIABLE

    monkeypatch.delenv(TORCH_THREADS_VARIABLE, raising=False)
    before = torch.get_num_threads()
    _, molecular_system = resolve_system(toluene_water_dir)
    settings = BenchmarkSettings(rows=("mm", "mts", "model"), steps=2, repeats=1, warmup=1, minimize_iterations=0,
                                 platform="CPU", threads=2)
    assert settings.torch_threads == "auto"
    try:
        result = benchmark_system(molecular_system, settings, "toluene-water")
    finally:
        torch.set_num_threads(before)
    threads = result.torch_threads
    assert threads["setting"] == "auto" and len(threads["probes"]) >= 1
    probe = threads["probes"][0]
    assert set(probe["ms_per_step"]) == {1, 2} and probe["chosen"] in (1, 2)
    assert threads["used_at_end"] == threads["probes"][-1]["chosen"]
    assert result.rows["mts"]["ms_per_step"] > 0
