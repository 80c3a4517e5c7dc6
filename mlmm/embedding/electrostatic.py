"""Electrostatic embedding: the ML region's own charges feel the MM point charges.

The ML model predicts geometry-dependent atomic charges ``q_ML`` for the region (AIMNet2 does).
Inside the coupling cutoff ``r_c`` they replace the region's fixed MM charges ``q_MM`` in the
Coulomb interaction with the environment's MM charges ``q_j``. The complete MM force field
(PME) stays in the MM force groups, so the embedding adds the *difference*::

    E_coupling = k_e * sum_i sum_j (q_ML,i - q_MM,i) * q_j * f(r_ij)
    f(r) = 1/r - 1/r_c + (r - r_c) / r_c**2     for r < r_c, else 0    (shifted force)

with ``k_e = 138.935456 kJ/mol nm e^-2``. ``f`` and ``f'`` vanish at ``r_c``, so energy and
forces are continuous and NVE energy is conserved. Net effect: within the cutoff the region
interacts through ``q_ML`` (up to the shift), beyond it the MM charges carry the long-range
tail through PME. Lennard-Jones between region and environment stays MM.

Optional polarization (the induction term of EMLE): induced dipoles ``mu`` on the region's
atoms from the field of the MM charges, with fixed element polarizabilities ``alpha`` (nm^3)
and Thole-damped mutual induction within the region (AMOEBA damping, ``a = 0.39``)::

    (alpha^-1 - T) mu = F,   E_pol = -1/2 k_e mu . F

where ``F_i = sum_j q_j (r_i - r_j)/r^3 * S(r)`` (e/nm^2) and ``S`` switches the field smoothly
to zero between ``r_c - w`` and ``r_c`` (C2 polynomial), so forces stay continuous.

With link atoms (:mod:`mlmm.embedding.link_atoms`) the model sees the region plus its link
hydrogens, ``i`` runs over the region's own atoms only (the links' ML charges do not couple),
and the ``q_j`` are the redistributed charges: the M1 atoms are left out and their MM charges
moved onto their M2 neighbours.

Everything runs inside one TorchScript module on the device of the positions. Since the
coupling is linear in the ML charges, ``E_coupling = sum_i (q_ML,i - q_MM,i) V_i`` with ``V_i``
the shifted-force potential of the MM charges at atom i, the terms from the dependence of
``q_ML`` on the geometry are ``V . dq_ML/dx``: a region model with ``forces_in_potential``
(the dense AIMNet2) returns the forces of ``E_ML + q_ML . V`` itself
(:class:`ChargePotentialEmbedding`); for other models autograd differentiates through the
model (:class:`ElectrostaticEmbedding`).
On the CPU the pair terms are computed only for the environment atoms that can be within
``r_c`` of a region atom (see :meth:`ElectrostaticEmbedding.environment_in_reach`); the other
pairs contribute exactly zero, so this changes the cost, not the result.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..torch_geometry import box_widths, minimum_image
from ..units import COULOMB_CONSTANT
from .link_atoms import CappedRegion

#: Thole damping parameter (dimensionless), as in AMOEBA
THOLE_DAMPING = 0.39
#: width (nm) of the region over which the polarizing field is switched off before the cutoff
FIELD_SWITCH_WIDTH = 0.2
#: margin (nm) added to the reach of the environment selection, far above float32 rounding
REACH_MARGIN = 0.01

#: Isotropic atomic polarizabilities (Angstrom^3) by atomic number, from the Thole-model
#: fit of van Duijnen and Swart (J. Phys. Chem. A 102, 2399, 1998); converted to nm^3 on use.
ATOMIC_POLARIZABILITY_A3 = {
    1: 0.514, 5: 1.0, 6: 1.405, 7: 1.105, 8: 0.862, 9: 0.444, 14: 3.0, 15: 1.8, 16: 2.900, 17: 2.400,
    33: 3.5, 34: 3.8, 35: 3.013, 53: 5.415,
}


def polarizabilities_nm3(atomic_numbers) -> np.ndarray:
    """Element polarizabilities (nm^3) for the given atomic numbers."""
    from ..errors import InputError

    missing = sorted({int(z) for z in atomic_numbers} - set(ATOMIC_POLARIZABILITY_A3))
    if missing:
        raise InputError(f"no atomic polarizability for atomic number(s) {missing}; run without polarization.")
    return np.array([ATOMIC_POLARIZABILITY_A3[int(z)] for z in atomic_numbers]) * 1e-3


class ElectrostaticEmbedding(torch.nn.Module):
    """ML energy of the region plus its electrostatic coupling to the MM charges.

    ``forward(positions (N,3) nm, box (3,3) nm) -> (energy kJ/mol, forces kJ/mol/nm (N,3))``.
    The region model must return ``"charges"`` (see :mod:`mlmm.potentials`); with ``link_atoms``
    it takes the region followed by the link hydrogens.
    """

    def __init__(self, region_model, region, environment, environment_charges, region_mm_charges,
                 cutoff: float, periodic: bool, polarizabilities=None, anchor: int = 0, link_atoms=None):
        super().__init__()
        self.model = region_model
        self.ml_input = CappedRegion(region, link_atoms, periodic, anchor)
        self.n_region = len(region)
        self.register_buffer("environment", torch.as_tensor(np.asarray(environment), dtype=torch.long))
        self.register_buffer("environment_charges", torch.as_tensor(np.asarray(environment_charges), dtype=torch.float64))
        self.register_buffer("region_mm_charges", torch.as_tensor(np.asarray(region_mm_charges), dtype=torch.float64))
        self.cutoff = float(cutoff)
        self.periodic = bool(periodic)
        self.coulomb_constant = COULOMB_CONSTANT
        self.thole_damping = THOLE_DAMPING
        self.switch_width = FIELD_SWITCH_WIDTH
        self.reach_margin = REACH_MARGIN
        self.polarize = polarizabilities is not None
        alpha = np.zeros(len(region)) if polarizabilities is None else np.asarray(polarizabilities)
        self.register_buffer("polarizabilities", torch.as_tensor(alpha, dtype=torch.float64))

    def forward(self, positions: torch.Tensor, box: torch.Tensor):
        positions = positions.detach().requires_grad_(True)
        ml_positions = self.ml_input(positions, box)
        region_positions = ml_positions.narrow(0, 0, self.n_region)
        dtype = positions.dtype
        potential, environment_charges, delta, safe, within = self._environment_potential(positions, region_positions,
                                                                                         box)
        ml_energy, ml_charges, target = self._ml_terms(ml_positions, potential)
        coupling = ((ml_charges - self.region_mm_charges.to(dtype)) * potential).sum()
        energy = ml_energy + coupling
        target = target + coupling
        if self.polarize:
            induction = self._polarization(region_positions, delta, safe, within, environment_charges)
            energy = energy + induction
            target = target + induction
        forces = torch.autograd.grad([target], [positions])[0]
        if forces is None:
            forces = torch.zeros_like(positions)
        return energy, -forces

    def _ml_terms(self, ml_positions: torch.Tensor, potential: torch.Tensor):
        """The ML energy (kJ/mol), the region's ML charges (e) and the ML part of the scalar whose
        gradient gives the forces: here the energy itself, charges and energy differentiable."""
        output = self.model(ml_positions)
        # a model in energy-only mode (mlmm.potentials.for_energy_only) returns charges without a
        # gradient, which would drop the forces through d q / d x
        assert "forces" not in output, ("the region model is in energy-only mode (a mechanical embedding set it); "
                                        "the electrostatic embedding needs its own model: create it again")
        dtype = ml_positions.dtype
        energy = output["energy"].to(dtype)
        return energy, output["charges"].to(dtype).narrow(0, 0, self.n_region), energy  # link atoms do not couple

    def _environment_potential(self, positions: torch.Tensor, region_positions: torch.Tensor, box: torch.Tensor):
        """Shifted-force potential V_i (kJ/mol/e) of the MM charges at each region atom, so that
        ``E_coupling = sum_i (q_ML,i - q_MM,i) V_i``; also the charges and pair data the induction
        term uses: (V, charges, delta, distance clamped to r_c, within r_c)."""
        dtype = positions.dtype
        environment, environment_charges = self.environment_in_reach(positions, region_positions, box)
        delta = positions.index_select(0, environment).unsqueeze(0) - region_positions.unsqueeze(1)
        if self.periodic:
            delta = minimum_image(delta, box)
        distance = torch.linalg.vector_norm(delta, dim=-1)  # (n, M)
        within = distance < self.cutoff
        safe = torch.where(within, distance, torch.full_like(distance, self.cutoff))
        rc = self.cutoff
        shifted = torch.where(within, 1.0 / safe - 1.0 / rc + (safe - rc) / (rc * rc), torch.zeros_like(safe))
        environment_charges = environment_charges.to(dtype)
        potential = self.coulomb_constant * (environment_charges.unsqueeze(0) * shifted).sum(dim=1)
        return potential, environment_charges, delta, safe, within

    def environment_in_reach(self, positions: torch.Tensor, region_positions: torch.Tensor,
                             box: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices and charges of the environment atoms that may lie within the cutoff of the region.

        On the CPU, where the pair terms of a protein-sized environment cost most of an ML/MM
        step (15 x 31,785 pairs, forward and backward, for T4L-toluene), this keeps the atoms
        within ``R = r_c + max_i |r_i - c| + REACH_MARGIN`` of the region's centroid ``c``: by the
        triangle inequality every atom within ``r_c`` of a region atom is among them, and the
        terms of all other pairs are exactly zero (``f`` and the field switch vanish beyond
        ``r_c``). No gradient flows through the selection: it is piecewise constant and changes
        only where the terms it adds or drops are zero. When ``R`` reaches half the smallest box
        width (a large region in a small box) every atom is kept. On other devices every atom
        is kept: a selection whose size depends on the positions would synchronise with the
        host and could not be captured in a CUDA graph.
        """
        if positions.device.type != "cpu":
            return self.environment, self.environment_charges
        region_positions = region_positions.detach()
        centre = region_positions.mean(dim=0)
        radius = torch.linalg.vector_norm(region_positions - centre, dim=1).max()
        reach = self.cutoff + float(radius) + self.reach_margin
        offsets = positions.detach().index_select(0, self.environment) - centre
        if self.periodic:
            assert box is not None, "ElectrostaticEmbedding was built for periodic boundaries but got no box"
            if reach >= 0.5 * float(box_widths(box).min()):
                return self.environment, self.environment_charges
            offsets = minimum_image(offsets, box)
        keep = torch.nonzero(torch.linalg.vector_norm(offsets, dim=1) < reach).squeeze(1)
        return self.environment.index_select(0, keep), self.environment_charges.index_select(0, keep)

    def _polarization(self, region_positions: torch.Tensor, delta: torch.Tensor, distance: torch.Tensor,
                      within: torch.Tensor, environment_charges: torch.Tensor) -> torch.Tensor:
        """Induction energy (kJ/mol) of Thole-coupled dipoles in the field of the MM charges."""
        dtype = region_positions.dtype
        rc = self.cutoff
        start = rc - self.switch_width
        t = ((distance - start) / self.switch_width).clamp(0.0, 1.0)
        switch = torch.where(within, 1.0 - t * t * t * (10.0 - 15.0 * t + 6.0 * t * t), torch.zeros_like(t))
        # field at region atom i from charge j: q_j (r_i - r_j) / r^3 ; delta = r_j - r_i
        weight = (environment_charges.unsqueeze(0) * switch / distance.pow(3)).unsqueeze(-1)
        field = -(weight * delta).sum(dim=1)  # (n, 3), e/nm^2

        n = region_positions.shape[0]
        alpha = self.polarizabilities.to(dtype)
        pair = region_positions.unsqueeze(0) - region_positions.unsqueeze(1)  # r_k - r_i, (n, n, 3)
        eye_n = torch.eye(n, dtype=dtype, device=region_positions.device)
        r = torch.linalg.vector_norm(pair + eye_n.unsqueeze(-1), dim=-1)  # diagonal padded, masked below
        u3 = r.pow(3) / (alpha.unsqueeze(0) * alpha.unsqueeze(1)).sqrt()
        damping = torch.exp(-self.thole_damping * u3)
        lambda3 = 1.0 - damping
        lambda5 = 1.0 - (1.0 + self.thole_damping * u3) * damping
        off_diagonal = (1.0 - eye_n).unsqueeze(-1).unsqueeze(-1)
        outer = pair.unsqueeze(-1) * pair.unsqueeze(-2)  # (n, n, 3, 3)
        eye3 = torch.eye(3, dtype=dtype, device=region_positions.device)
        dipole_field = (3.0 * lambda5 / r.pow(5)).unsqueeze(-1).unsqueeze(-1) * outer \
            - (lambda3 / r.pow(3)).unsqueeze(-1).unsqueeze(-1) * eye3
        dipole_field = dipole_field * off_diagonal  # T_ik, field at i from a unit dipole at k
        matrix = torch.diag_embed((1.0 / alpha).repeat_interleave(3)) \
            - dipole_field.permute(0, 2, 1, 3).reshape(3 * n, 3 * n)
        dipoles = torch.linalg.solve(matrix, field.reshape(3 * n, 1)).reshape(n, 3)
        return -0.5 * self.coulomb_constant * (dipoles * field).sum()


class ChargePotentialEmbedding(ElectrostaticEmbedding):
    """:class:`ElectrostaticEmbedding` for a region model with ``forces_in_potential`` (the dense AIMNet2).

    The coupling is linear in the ML charges, ``sum_i (q_ML,i - q_MM,i) V_i(x)``, so its
    derivative by them is the potential V of the MM charges, known before the model is called.
    The model returns the forces of ``E_ML + q_ML . V`` itself (V held fixed; the dense AIMNet2
    computes them by hand); autograd then runs only through the map to the model's coordinates
    (over ``-F . x``, F fixed), the coupling at fixed charges and the induction term. The same
    energy and forces as the parent class, which differentiates the model by autograd.
    """

    def _ml_terms(self, ml_positions: torch.Tensor, potential: torch.Tensor):
        """ML energy, charges (both without a gradient) and ``-F . x`` over the model's coordinates,
        F the model's forces of ``E_ML + q_ML . V`` with V held fixed."""
        dtype = ml_positions.dtype
        grad_was_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(False)
        n_links = ml_positions.shape[0] - self.n_region
        model_potential = torch.cat([potential, potential.new_zeros(n_links)])  # link atoms do not couple
        output = self.model.forces_in_potential(ml_positions.clone(), model_potential.clone())
        energy = output["energy"].to(dtype).clone()
        charges = output["charges"].to(dtype).narrow(0, 0, self.n_region).clone()
        forces = output["forces"].to(dtype).clone()
        torch.set_grad_enabled(grad_was_enabled)
        return energy, charges, -(ml_positions * forces).sum()
