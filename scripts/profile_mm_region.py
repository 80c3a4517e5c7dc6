"""What the MMRegion subtraction costs, and what a region-only version of it would cost.

    python scripts/profile_mm_region.py SYSTEM [--steps 20] [--repeats 5] [--threads 2]
    python scripts/profile_mm_region.py SYSTEM --bench direct --json after.json

SYSTEM is a recipe name in systems/, a recipe file or a saved folder.

The ML correction of :func:`mlmm.embedding.create_mixed_system` subtracts the MM energy of
the region alone in the same box. Its nonbonded part is a ``NonbondedForce`` copy over
*all* atoms (region charges and LJ, zeros elsewhere) with PME, so every slow step pays a
neighbour list and a reciprocal-space sum over the whole box. This script compares three
ways to compute the same subtraction, all in force group ML_SLOW:

- ``pme_copy``: what mlmm does now (CustomCVForce of the region's bonded copies and the
  NonbondedForce copy);
- ``cv_pairs``: the same CustomCVForce with the NonbondedForce copy replaced by a
  ``CustomBondForce`` over the region's atom pairs: Coulomb k q_i q_j / r (PME's real and
  reciprocal parts of one pair add up to exactly this, minimum image) and LJ with the same
  cutoff and switch; exceptions (1-4 pairs) as NonbondedForce computes them (no cutoff),
  excluded pairs left out. What it leaves out is the region's interaction with its own
  periodic images (and PME's discretisation error);
- ``direct``: no CustomCVForce: each term scaled by ``-lambda_ml`` directly in custom
  bonded forces (bonds, angles, torsions, pairs), each with its lambda derivative.

For each it prints the slow-group energy and force differences from ``pme_copy``, the time
of one evaluation of the subtraction alone, and the ms per inner step of MM alone and of
ML/MM with MTS (k = ``--mts``, default mlmm.splitting.DEFAULT_MTS_FACTOR) on the CPU
platform, timed in interleaved rounds. With ``--bench`` it runs the complete ``mlmm bench``
instead, with the subtraction built one way.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os

import mlmm  # noqa: F401  (torch before openmm)
import numpy as np
import openmm
import openmm.unit as u
import torch

from mlmm import forcegroups
from mlmm.bench import timing
from mlmm.bench.harness import _minimized_positions, resolve_system
from mlmm.embedding import LAMBDA_ML
from mlmm.embedding import mixed as mixed_module
from mlmm.embedding.mm_region import region_mm_forces
from mlmm.splitting import DEFAULT_MTS_FACTOR, assign_force_groups, make_integrator
from mlmm.units import COULOMB_CONSTANT

_NM = u.nanometer
_KJ = u.kilojoule_per_mole


def region_pair_terms(nonbonded: openmm.NonbondedForce, region) -> list[tuple[int, int, float, float, float, bool]]:
    """(i, j, q_i q_j [e^2], sigma [nm], epsilon [kJ/mol], is_exception) for every interacting region pair."""
    inside = set(int(i) for i in region)
    exceptions = {}
    for index in range(nonbonded.getNumExceptions()):
        i, j, charge_product, sigma, epsilon = nonbonded.getExceptionParameters(index)
        if i in inside and j in inside:
            exceptions[(min(i, j), max(i, j))] = (charge_product.value_in_unit(u.elementary_charge**2),
                                                  sigma.value_in_unit(_NM), epsilon.value_in_unit(_KJ))
    parameters = {i: [p._value for p in nonbonded.getParticleParameters(i)] for i in inside}
    atoms = sorted(inside)
    terms = []
    for a, i in enumerate(atoms):
        for j in atoms[a + 1:]:
            if (i, j) in exceptions:
                charge_product, sigma, epsilon = exceptions[(i, j)]
                if charge_product != 0.0 or epsilon != 0.0:
                    terms.append((i, j, charge_product, sigma, epsilon, True))
            else:
                (qi, si, ei), (qj, sj, ej) = parameters[i], parameters[j]
                terms.append((i, j, qi * qj, 0.5 * (si + sj), math.sqrt(ei * ej), False))
    return terms


def region_pair_force(nonbonded: openmm.NonbondedForce, region, scale: str = "") -> openmm.CustomBondForce:
    """The region's intra-region nonbonded energy as a CustomBondForce (minimum image), times ``scale``."""
    cutoff_method = nonbonded.getNonbondedMethod() != openmm.NonbondedForce.NoCutoff
    rc = nonbonded.getCutoffDistance().value_in_unit(_NM)
    lj = "4*eps*((sig/r)^12-(sig/r)^6)"
    definitions = ""
    if cutoff_method:
        # exceptions (cut = 0) have no cutoff, as in NonbondedForce
        window = f"(1-cut*step(r-{rc}))"
        if nonbonded.getUseSwitchingFunction():
            rs = nonbonded.getSwitchingDistance().value_in_unit(_NM)
            window += f"*(1-cut*step(r-{rs})*(10*x^3-15*x^4+6*x^5)); x=min(1,max(0,(r-{rs})/({rc}-{rs})))"
            definitions = window[window.index(";"):]
            window = window[:window.index(";")]
        lj = f"{window}*{lj}"
    energy = f"{COULOMB_CONSTANT}*qq/r + {lj}"
    force = openmm.CustomBondForce((f"{scale}*({energy})" if scale else energy) + definitions)
    for name in ("qq", "sig", "eps", "cut"):
        force.addPerBondParameter(name)
    force.setUsesPeriodicBoundaryConditions(nonbonded.usesPeriodicBoundaryConditions())
    for i, j, charge_product, sigma, epsilon, is_exception in region_pair_terms(nonbonded, region):
        force.addBond(i, j, [charge_product, sigma, epsilon, 0.0 if is_exception else 1.0])
    return force


def cv_pairs_forces(system, region):
    """``region_mm_forces`` with the NonbondedForce copy replaced by :func:`region_pair_force`."""
    forces = region_mm_forces(system, region)
    forces.pop("mm_nonbonded", None)
    nonbonded = [f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)]
    if nonbonded:
        forces["mm_pairs"] = region_pair_force(nonbonded[0], region)
    return forces


def direct_forces(system, region, lambda_value):
    """The subtraction -lambda * E_MM(region) as custom bonded forces, no CustomCVForce."""
    scale = f"-{LAMBDA_ML}"
    copies = region_mm_forces(system, region)
    result = []
    if "mm_bonds" in copies:
        bonds = openmm.CustomBondForce(f"{scale}*0.5*k*(r-r0)^2")
        for name in ("r0", "k"):
            bonds.addPerBondParameter(name)
        for index in range(copies["mm_bonds"].getNumBonds()):
            i, j, r0, k = copies["mm_bonds"].getBondParameters(index)
            bonds.addBond(i, j, [r0, k])
        result.append(bonds)
    if "mm_angles" in copies:
        angles = openmm.CustomAngleForce(f"{scale}*0.5*k*(theta-theta0)^2")
        for name in ("theta0", "k"):
            angles.addPerAngleParameter(name)
        for index in range(copies["mm_angles"].getNumAngles()):
            i, j, k_, theta0, k = copies["mm_angles"].getAngleParameters(index)
            angles.addAngle(i, j, k_, [theta0, k])
        result.append(angles)
    if "mm_torsions" in copies:
        torsions = openmm.CustomTorsionForce(f"{scale}*k*(1+cos(n*theta-phase))")
        for name in ("n", "phase", "k"):
            torsions.addPerTorsionParameter(name)
        for index in range(copies["mm_torsions"].getNumTorsions()):
            i, j, k_, l, n, phase, k = copies["mm_torsions"].getTorsionParameters(index)
            torsions.addTorsion(i, j, k_, l, [n, phase, k])
        result.append(torsions)
    if "mm_rb_torsions" in copies:
        raise NotImplementedError("RB torsions: not needed for the systems profiled here")
    nonbonded = [f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)]
    if nonbonded:
        result.append(region_pair_force(nonbonded[0], region, scale))
    for force in result:
        force.addGlobalParameter(LAMBDA_ML, float(lambda_value))
        force.addEnergyParameterDerivative(LAMBDA_ML)
        force.setForceGroup(forcegroups.ML_SLOW)
    return result


@contextlib.contextmanager
def mm_region_variant(variant: str):
    """Within the block, create_mixed_system builds the MMRegion subtraction the ``variant`` way."""
    original_forces = mixed_module.region_mm_forces
    original_correction = mixed_module._correction_forces
    if variant == "cv_pairs":
        mixed_module.region_mm_forces = cv_pairs_forces
    elif variant == "direct":
        def correction(system, module, indices, periodic, lambda_value):
            ml_force = original_correction(system, module, indices, periodic, lambda_value)[0]
            return [ml_force, *direct_forces(system, indices, lambda_value)]
        mixed_module._correction_forces = correction
    elif variant != "pme_copy":
        raise ValueError(f"unknown variant {variant!r}")
    try:
        yield
    finally:
        mixed_module.region_mm_forces = original_forces
        mixed_module._correction_forces = original_correction


def build_variant(molecular_system, variant):
    """create_mixed_system with the MMRegion subtraction built the ``variant`` way."""
    with mm_region_variant(variant):
        return mixed_module.create_mixed_system(molecular_system)


def run_bench(system: str, variant: str, json_path: str, steps: int, repeats: int) -> None:
    """The complete ``mlmm bench`` of one system with the subtraction built the ``variant`` way."""
    from mlmm.bench import BenchmarkSettings, markdown_table, run_benchmarks, write_json

    with mm_region_variant(variant):
        report = run_benchmarks([system], BenchmarkSettings(steps=steps, repeats=repeats), progress=False)
    report["settings"]["mm_region_variant"] = variant
    write_json(report, json_path)
    print(f"MMRegion variant {variant}, load average {os.getloadavg()[0]:.1f}")
    print(markdown_table(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("system")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="OpenMM CPU threads")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--mts", type=int, default=DEFAULT_MTS_FACTOR)
    parser.add_argument("--bench", metavar="VARIANT", choices=("pme_copy", "cv_pairs", "direct"),
                        help="instead: run the whole mlmm bench with this variant (JSON to --json)")
    parser.add_argument("--json", default="bench-mm-region.json")
    args = parser.parse_args()
    if args.bench:
        run_bench(args.system, args.bench, args.json, args.steps, args.repeats)
        return
    torch.set_num_threads(args.torch_threads)
    name, molecular_system = resolve_system(args.system)
    platform = openmm.Platform.getPlatformByName("CPU")
    properties = {"Threads": str(args.threads)}
    positions = _minimized_positions(molecular_system, platform, properties, 50)
    variants = {variant: build_variant(molecular_system, variant) for variant in ("pme_copy", "cv_pairs", "direct")}
    slow = forcegroups.group_mask(forcegroups.ML_SLOW)

    # accuracy: the slow group without the TorchForce, i.e. the subtraction alone
    evaluation = {}
    for variant, mixed in variants.items():
        for force in mixed.system.getForces():
            if force.getName() == mixed_module.ML_FORCE_NAME:
                force.setForceGroup(2)  # out of the way for now
        context = openmm.Context(mixed.system, openmm.VerletIntegrator(0.001), platform, properties)
        context.setPositions(positions)
        state = context.getState(getEnergy=True, getForces=True, groups=slow)
        evaluation[variant] = (context, state.getPotentialEnergy().value_in_unit(_KJ),
                               state.getForces(asNumpy=True).value_in_unit(_KJ / _NM))
    reference_energy, reference_forces = evaluation["pme_copy"][1:]
    print(f"{name}: {molecular_system.n_atoms} atoms, load average {os.getloadavg()[0]:.1f}, OpenMM threads "
          f"{args.threads}, torch threads {args.torch_threads}")
    print(f"subtraction -E_MM(region) with pme_copy: {reference_energy:.4f} kJ/mol, largest force "
          f"{np.abs(reference_forces).max():.1f} kJ/mol/nm")
    for variant, (context, energy, forces) in evaluation.items():
        timing.time_evaluations(context, slow, 2)
        ms = timing.median([timing.time_evaluations(context, slow, 5).wall_ms for _ in range(args.repeats)])
        print(f"  {variant:9s} energy difference {energy - reference_energy:+.5f} kJ/mol, largest force difference "
              f"{np.abs(forces - reference_forces).max():.2e} kJ/mol/nm, {ms:.3f} ms per evaluation")
        del context
    evaluation.clear()
    for mixed in variants.values():
        for force in mixed.system.getForces():
            if force.getName() == mixed_module.ML_FORCE_NAME:
                force.setForceGroup(forcegroups.ML_SLOW)

    def context(system, k):
        ctx = openmm.Context(system, make_integrator(300, 1, 0.002, k, seed=1), platform, properties)
        ctx.setPositions(positions)
        ctx.setVelocitiesToTemperature(300, 1)
        ctx.getIntegrator().step(2)
        return ctx

    rows = {"mm": (context(assign_force_groups(copy.deepcopy(molecular_system.system)), 1), args.steps, 1)}
    for variant, mixed in variants.items():
        rows[f"mts {variant}"] = (context(mixed.system, args.mts), math.ceil(args.steps / args.mts), args.mts)
    samples = {row: [] for row in rows}
    for _ in range(args.repeats):
        for row, (ctx, steps, k) in rows.items():
            samples[row].append(timing.time_steps(ctx, steps).wall_ms / k)
    mm = timing.median(samples["mm"])
    print(f"ms per inner step (median of {args.repeats}), k = {args.mts}:")
    for row, values in samples.items():
        value = timing.median(values)
        print(f"  {row:14s} {value:8.2f}   speed vs mm {mm / value:.2f}")


if __name__ == "__main__":
    main()
