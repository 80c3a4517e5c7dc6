"""A real, tiny hydration free-energy run: methanol, MM and ML/MM (AIMNet2, both embeddings).

The protocol is far too short to converge; the checks are the ones a short run can make:
the thermodynamic cycle's signs (a wrong sign moves methanol's dG_hyd by ~40 kJ/mol),
Gibbs-Bogoliubov bounds on every end-state correction, the vacuum correction shared by both
embeddings, finite diagnostics, JSON output and plots.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import mlmm  # noqa: F401  (imports torch before openmm)

from mlmm.freeenergy import Protocol, freesolv_entries, hydration_free_energies
from mlmm.freeenergy.hydration import SOLVENT_DECOUPLING, VACUUM_DECOUPLING, VACUUM_ENDSTATE, solvent_endstate

METHANOL = "mobley_1636752"  # experimental dG_hyd -5.10 kcal/mol = -21.3 kJ/mol

CI_PROTOCOL = Protocol.preset("smoke").replace(
    name="ci", minimization_steps=30, equilibration_steps=50, samples_per_window=15, steps_per_sample=10,
    endstate_lambdas=(0.0, 1.0), electrostatics_lambdas=(1.0, 0.5, 0.0), sterics_lambdas=(1.0, 0.5, 0.0),
    neq_switches=0, seed=3,
)


@pytest.fixture(scope="module")
def report():
    return hydration_free_energies(freesolv_entries([METHANOL]), protocol=CI_PROTOCOL, model="aimnet2",
                                   embeddings=("mechanical", "electrostatic"), progress=False)


def test_legs_and_states(report):
    (result,) = report.results
    assert set(result.legs) == {SOLVENT_DECOUPLING, VACUUM_DECOUPLING, VACUUM_ENDSTATE,
                                solvent_endstate("mechanical"), solvent_endstate("electrostatic")}
    # in water: charges off, then Lennard-Jones off; in vacuum there is nothing to decouple sterics from
    solvent = result.legs[SOLVENT_DECOUPLING].mbar.state_labels
    assert solvent[0] == {"lambda_electrostatics": 1.0, "lambda_sterics": 1.0}
    assert solvent[2] == {"lambda_electrostatics": 0.0, "lambda_sterics": 1.0}
    assert solvent[-1] == {"lambda_electrostatics": 0.0, "lambda_sterics": 0.0}
    assert len(result.legs[VACUUM_DECOUPLING].mbar.state_labels) == 3
    for leg in result.legs.values():
        assert np.isfinite(leg.dG) and 0.0 < leg.dG_error < 20.0, (leg.name, leg.dG, leg.dG_error)
        assert np.all(np.isfinite(leg.mbar.overlap)) and leg.steps > 0


def test_cycle_signs_and_values(report):
    (result,) = report.results
    legs = result.legs
    dG_mm = result.dG_mm
    assert dG_mm["value"] == pytest.approx(legs[VACUUM_DECOUPLING].dG - legs[SOLVENT_DECOUPLING].dG)
    assert dG_mm["error"] == pytest.approx(np.hypot(legs[VACUUM_DECOUPLING].dG_error, legs[SOLVENT_DECOUPLING].dG_error))
    # methanol is hydrophilic: within 12.5 kJ/mol (3 kcal/mol) of experiment even with this little sampling
    assert abs(dG_mm["value"] - result.molecule.experimental) < 12.5, dG_mm
    for embedding in ("mechanical", "electrostatic"):
        expected = dG_mm["value"] + legs[solvent_endstate(embedding)].dG - legs[VACUUM_ENDSTATE].dG
        assert result.dG_mlmm[embedding]["value"] == pytest.approx(expected)
        # the ML and MM zeros of energy (~3e5 kJ/mol apart) cancel between the phases
        assert abs(result.corrections[embedding]["value"]) < 15.0, result.corrections


def test_endstate_corrections_obey_gibbs_bogoliubov(report):
    """<dU>_ML/MM <= dG(MM -> ML/MM) <= <dU>_MM, with dU = dU/dlambda (U is linear in lambda)."""
    for name in (VACUUM_ENDSTATE, solvent_endstate("mechanical"), solvent_endstate("electrostatic")):
        mbar = report.results[0].legs[name].mbar
        assert mbar.dudl_mean is not None and mbar.ti_dG is not None
        slack = 3 * np.hypot(mbar.dudl_error[[0, -1]], mbar.dG_error).max() + 1e-6
        assert mbar.dudl_mean[-1] - slack <= mbar.dG <= mbar.dudl_mean[0] + slack, (name, mbar.dudl_mean, mbar.dG)
        assert abs(mbar.dG) > 1e4  # AIMNet2's energy zero: a total energy, not a formation energy


def test_report_json_and_plots(report, tmp_path):
    from mlmm.freeenergy.plots import plot_hydration, plot_leg

    data = json.loads(json.dumps(report.to_dict()))
    assert data["units"] == "kJ/mol"
    molecule = data["molecules"][0]
    assert molecule["id"] == METHANOL and molecule["smiles"] == "CO"
    assert set(molecule["dG_mlmm"]) == {"mechanical", "electrostatic"}
    assert molecule["experimental"]["value"] == pytest.approx(-5.10 * 4.184)
    stats = data["statistics"]
    assert stats["mm"]["n"] == 1
    assert stats["mm"]["mue"] == pytest.approx(abs(molecule["dG_mm"]["value"] - molecule["experimental"]["value"]))
    assert stats["gaff_freesolv"]["mue_kcal_per_mol"] == pytest.approx(abs(-3.49 + 5.10))
    paths = plot_leg(report.results[0].legs[solvent_endstate("electrostatic")], tmp_path)
    paths.append(plot_hydration(report, tmp_path / "hydration.png"))
    assert {p.name for p in paths} >= {"solvent-endstate-electrostatic-dudl.png", "hydration.png"}
    assert all(p.stat().st_size > 1000 for p in paths)
    assert "methanol" in report.table()


def test_report_reads_back_from_json(report, tmp_path):
    from mlmm.atomic_io import write_text_atomic
    from mlmm.freeenergy import HydrationReport

    path = tmp_path / "report.json"
    write_text_atomic(path, json.dumps(report.to_dict()))
    loaded = HydrationReport.load(path)
    assert json.dumps(loaded.to_dict(), sort_keys=True) == json.dumps(report.to_dict(), sort_keys=True)
    assert loaded.table() == report.table() and loaded.protocol == report.protocol
    mbar = loaded.results[0].legs[VACUUM_ENDSTATE].mbar
    assert mbar.converged == report.results[0].legs[VACUUM_ENDSTATE].mbar.converged and mbar.kT == pytest.approx(CI_PROTOCOL.kT)


def test_validation_script_resumes_only_a_matching_report(report, tmp_path):
    """scripts/validate_freesolv.py keeps a finished report's molecules, and never overwrites one by accident."""
    import importlib.util
    from pathlib import Path

    from mlmm.atomic_io import write_text_atomic

    script = Path(__file__).resolve().parents[1] / "scripts" / "validate_freesolv.py"
    spec = importlib.util.spec_from_file_location("validate_freesolv", script)
    validate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(validate)

    path = tmp_path / "report.json"
    assert validate.finished_report(path, False, CI_PROTOCOL, "aimnet2", ["mechanical", "electrostatic"]) is None
    write_text_atomic(path, json.dumps(report.to_dict()))
    with pytest.raises(SystemExit, match="pass --resume"):
        validate.finished_report(path, False, CI_PROTOCOL, "aimnet2", ["mechanical", "electrostatic"])
    with pytest.raises(SystemExit, match="embeddings"):
        validate.finished_report(path, True, CI_PROTOCOL, "aimnet2", ["mechanical"])
    with pytest.raises(SystemExit, match="protocol"):
        validate.finished_report(path, True, CI_PROTOCOL.replace(seed=4), "aimnet2", ["mechanical", "electrostatic"])
    resumed = validate.finished_report(path, True, CI_PROTOCOL, "aimnet2", ["mechanical", "electrostatic"])
    assert [r.molecule.id for r in resumed.results] == [METHANOL]


def test_table_flags_an_unconverged_molecule_with_its_remedy(report):
    """The tiny CI protocol converges nothing; the table marks the molecule and lists, per leg,
    which neighbouring states overlap too little or that the halves disagree."""
    (result,) = report.results
    table = report.table()
    assert result.problems() == [problem for name, leg in result.legs.items()
                                 for problem in (f"{name}: {p}" for p in leg.mbar.problems())]
    if result.converged:
        assert "not converged" not in table and not result.problems()
    else:
        assert table.splitlines()[2].endswith("*")
        for problem in result.problems():
            assert f"{METHANOL} {problem}" in table
