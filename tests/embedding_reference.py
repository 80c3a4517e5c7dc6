"""Independent reference calculations for the embedding tests (NumPy and plain OpenMM).

Also the NVE check they share (:func:`nve_total_energy_std_and_drift`).

Nothing here uses mlmm's embedding code: the MM energy of the region alone is computed from a
new System that holds only the region's particles, and the electrostatic coupling with NumPy.
"""

from __future__ import annotations

import numpy as np
import openmm
import openmm.unit as u

from mlmm.units import COULOMB_CONSTANT


def potential_energy(system: openmm.System, positions_nm: np.ndarray, platform: str = "Reference") -> float:
    """Potential energy (kJ/mol) of ``system`` at ``positions_nm`` on a fresh context."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions_nm)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)


def region_alone_system(system: openmm.System, region: np.ndarray, periodic: bool = True) -> openmm.System:
    """A System of the region's particles only, in the same box, with the same MM terms.

    The long-range dispersion correction is left out: it belongs to the whole box. With
    ``periodic=False`` the nonbonded method is NoCutoff: the region's atom pairs with plain
    Coulomb, no periodic images (the reference of ``mm_region="pairs"`` for a region smaller
    than the switching distance).
    """
    index = {int(old): new for new, old in enumerate(region)}
    alone = openmm.System()
    for old in region:
        alone.addParticle(system.getParticleMass(int(old)))
    alone.setDefaultPeriodicBoxVectors(*system.getDefaultPeriodicBoxVectors())

    def mapped(atoms):
        return [index[a] for a in atoms] if all(a in index for a in atoms) else None

    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            new = openmm.NonbondedForce()
            new.setNonbondedMethod(force.getNonbondedMethod() if periodic else openmm.NonbondedForce.NoCutoff)
            new.setCutoffDistance(force.getCutoffDistance())
            new.setUseSwitchingFunction(force.getUseSwitchingFunction())
            new.setSwitchingDistance(force.getSwitchingDistance())
            new.setEwaldErrorTolerance(force.getEwaldErrorTolerance())
            new.setUseDispersionCorrection(False)
            for old in region:
                new.addParticle(*force.getParticleParameters(int(old)))
            for k in range(force.getNumExceptions()):
                i, j, qq, sigma, epsilon = force.getExceptionParameters(k)
                pair = mapped([i, j])
                if pair:
                    new.addException(*pair, qq, sigma, epsilon)
        elif isinstance(force, openmm.HarmonicBondForce):
            new = openmm.HarmonicBondForce()
            for k in range(force.getNumBonds()):
                i, j, length, kb = force.getBondParameters(k)
                if (pair := mapped([i, j])):
                    new.addBond(*pair, length, kb)
        elif isinstance(force, openmm.HarmonicAngleForce):
            new = openmm.HarmonicAngleForce()
            for k in range(force.getNumAngles()):
                i, j, l, theta, ka = force.getAngleParameters(k)
                if (triple := mapped([i, j, l])):
                    new.addAngle(*triple, theta, ka)
        elif isinstance(force, openmm.PeriodicTorsionForce):
            new = openmm.PeriodicTorsionForce()
            for k in range(force.getNumTorsions()):
                i, j, l, m, n, phase, kt = force.getTorsionParameters(k)
                if (quad := mapped([i, j, l, m])):
                    new.addTorsion(*quad, n, phase, kt)
        else:
            continue
        alone.addForce(new)
    return alone


def minimum_image_numpy(delta: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Minimum-image displacement for a rectangular box (rows of ``box`` on the diagonal)."""
    lengths = np.diag(box)
    return delta - lengths * np.round(delta / lengths)


def coupling_energy_numpy(region_xyz, ml_charges, mm_charges_region, env_xyz, env_charges, cutoff, box=None):
    """Shifted-force Coulomb coupling of (q_ML - q_MM) on the region with the MM charges (kJ/mol)."""
    total = 0.0
    for i in range(len(region_xyz)):
        delta = env_xyz - region_xyz[i]
        if box is not None:
            delta = minimum_image_numpy(delta, box)
        r = np.linalg.norm(delta, axis=1)
        f = np.where(r < cutoff, 1.0 / r - 1.0 / cutoff + (r - cutoff) / cutoff**2, 0.0)
        total += (ml_charges[i] - mm_charges_region[i]) * np.sum(env_charges * f)
    return COULOMB_CONSTANT * total


def polarization_energy_numpy(region_xyz, alpha_nm3, env_xyz, env_charges, cutoff, switch_width, thole, box=None):
    """Induction energy (kJ/mol) of Thole-damped mutually induced dipoles, written out plainly."""
    n = len(region_xyz)
    field = np.zeros((n, 3))
    for i in range(n):
        delta = env_xyz - region_xyz[i]  # r_j - r_i
        if box is not None:
            delta = minimum_image_numpy(delta, box)
        r = np.linalg.norm(delta, axis=1)
        t = np.clip((r - (cutoff - switch_width)) / switch_width, 0.0, 1.0)
        s = np.where(r < cutoff, 1 - t**3 * (10 - 15 * t + 6 * t**2), 0.0)
        field[i] = -np.sum((env_charges * s / r**3)[:, None] * delta, axis=0)
    a = np.zeros((3 * n, 3 * n))
    for i in range(n):
        a[3 * i:3 * i + 3, 3 * i:3 * i + 3] = np.eye(3) / alpha_nm3[i]
        for k in range(n):
            if i == k:
                continue
            rvec = region_xyz[k] - region_xyz[i]
            r = np.linalg.norm(rvec)
            u3 = r**3 / np.sqrt(alpha_nm3[i] * alpha_nm3[k])
            l3 = 1 - np.exp(-thole * u3)
            l5 = 1 - (1 + thole * u3) * np.exp(-thole * u3)
            tensor = 3 * l5 * np.outer(rvec, rvec) / r**5 - l3 * np.eye(3) / r**3
            a[3 * i:3 * i + 3, 3 * k:3 * k + 3] = -tensor
    dipoles = np.linalg.solve(a, field.reshape(-1))
    return -0.5 * COULOMB_CONSTANT * float(dipoles @ field.reshape(-1))


def nve_total_energy_std_and_drift(system: openmm.System, positions_nm, steps: int,
                                   parameters: dict | None = None) -> tuple[float, float]:
    """Standard deviation and linear drift (kJ/mol, over the run) of the total energy.

    ``steps`` of 0.5 fs velocity Verlet on the CPU platform from ``positions_nm`` with 300 K
    velocities (seed 1), constraints applied first; the total is sampled every 10 steps.
    ``parameters`` sets Context global parameters (for example lambda_ml).
    """
    integrator = openmm.VerletIntegrator(0.5 * u.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    for name, value in (parameters or {}).items():
        context.setParameter(name, value)
    context.setPositions(positions_nm)
    context.setVelocitiesToTemperature(300 * u.kelvin, 1)
    context.applyConstraints(1e-8)
    context.applyVelocityConstraints(1e-8)
    totals = []
    for _ in range(steps // 10):
        integrator.step(10)
        state = context.getState(getEnergy=True)
        totals.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(u.kilojoule_per_mole))
    totals = np.array(totals)
    return float(np.std(totals)), float(abs(np.polyfit(np.arange(len(totals)), totals, 1)[0]) * len(totals))
