"""A user's own ML potential from a TorchScript file (option ``path``).

The file must hold a region model (:mod:`mlmm.potentials`) saved with
``torch.jit.script(model).save(path)``::

    class MyModel(torch.nn.Module):
        def forward(self, positions: torch.Tensor) -> Dict[str, torch.Tensor]:
            # positions: (n, 3) nm, the region's atoms in mlmm's order, made whole
            return {"energy": energy_kj_per_mol}      # 0-d, differentiable
            # optional: "charges" (n,) e, "energy_std" kJ/mol

Optional buffers ``atomic_numbers`` ((n,) int) and ``total_charge`` (e) are compared with
the region the model is used for. The file is checked on load: the ``forward`` signature,
a finite and differentiable energy and finite forces on a test geometry, charges (if any)
of the right shape summing to the region's charge, and plausible energy units. The unit
check stretches the region's real geometry (option ``positions``, (n, 3) nm; passed by
:func:`mlmm.ml_force.add_ml_potential` when it has positions) by 10 % about its centroid:
over 30 drug-like molecules from MiniDrugBank, AIMNet2 gives an energy rise of 10-42
kJ/mol per atom and an RMS force of 2,400-5,100 kJ/mol/nm there, so a model returning eV
(96x smaller) or Hartree (2,625x smaller) falls far outside the accepted windows below (a
model returning kcal/mol, 4.2x smaller, does not). Length mistakes are caught only when
gross: AIMNet2 fed positions 10x too small (a model trained in Angstrom given nm) still
gives plausible-looking numbers, so the check cannot promise that. Without ``positions``
the file is only run on a lattice of atoms 0.2 nm apart (signature and finite output),
and a warning says the units were not checked.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch

from mlmm.errors import InputError
from mlmm.potentials import PotentialPlugin, check_options
from mlmm.units import KJ_PER_MOL_PER_EV

#: accepted energy rise per atom (kJ/mol) on stretching the region by 10 %
STRETCH_ENERGY_PER_ATOM = (2.0, 1000.0)
#: accepted RMS force (kJ/mol/nm) on the region stretched by 10 %
STRETCH_RMS_FORCE = (300.0, 100_000.0)
STRETCH_FACTOR = 1.10
HARTREE_IN_KJ_PER_MOL = 2625.4996394799

UNIT_ADVICE = (
    "mlmm expects energies in kJ/mol and positions in nm: a model that returns eV must multiply "
    f"its energy by {KJ_PER_MOL_PER_EV:.4f} (mlmm.units.KJ_PER_MOL_PER_EV), one that returns Hartree by "
    f"{HARTREE_IN_KJ_PER_MOL:.1f}, one that returns kcal/mol by 4.184; a model trained in Angstrom must "
    "multiply the positions it receives by 10."
)


class TorchScriptFilePlugin(PotentialPlugin):
    """The user's TorchScript region model from ``path=FILE`` (see the module docstring)."""

    name = "torchscript"
    description = "your own TorchScript file (path=FILE): forward(positions nm) -> {'energy': kJ/mol, ...}"
    elements = None
    supports_charge = True
    provides_charges = None  # a file may return "charges"; the embedding checks what it gets

    def weights_available(self) -> bool:
        return True

    def status(self) -> str:
        return "ready (give the file with path=FILE)"

    def create_model(self, atomic_numbers, total_charge: int = 0, **options) -> torch.jit.ScriptModule:
        check_options(self.name, options, ("path",))
        if options.get("path") is None:
            raise InputError(
                "model 'torchscript' needs the file: pass path=FILE (a module saved with "
                "torch.jit.script(model).save(FILE))."
            )
        path = Path(options["path"]).expanduser()
        if not path.is_file():
            raise InputError(f"TorchScript file {str(path)!r} does not exist; give the path of a saved model.")
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise InputError(
                f"{str(path)!r} is not a TorchScript file ({type(exc).__name__}); save the model with "
                "torch.jit.script(model).save(path)."
            ) from None
        numbers = [int(z) for z in atomic_numbers]
        _check_signature(model, path)
        _check_region_buffers(model, path, numbers, int(total_charge))
        positions = options.get("positions")
        if positions is None:
            warnings.warn(
                f"the units of {path.name} were not checked: pass positions=(n, 3) nm of the region "
                "(add_ml_potential does so when given positions).",
                stacklevel=2,
            )
            _evaluate(model, path, _lattice(len(numbers)), int(total_charge))
        else:
            geometry = np.asarray(positions, dtype=np.float64)
            if geometry.shape != (len(numbers), 3):
                raise InputError(
                    f"positions for the unit check have shape {geometry.shape}; expected ({len(numbers)}, 3) nm."
                )
            _check_units(model, path, torch.as_tensor(geometry), int(total_charge))
        return model


def _check_signature(model, path: Path) -> None:
    if not hasattr(model, "forward"):
        raise InputError(f"{path.name} has no forward method; it must define forward(positions) -> Dict[str, Tensor].")
    schema = model.forward.schema
    arguments = [str(a.type) for a in schema.arguments[1:]]
    returns = [str(r.type) for r in schema.returns]
    if arguments != ["Tensor"] or returns != ["Dict[str, Tensor]"]:
        raise InputError(
            f"{path.name} has forward{tuple(arguments)} -> {', '.join(returns)}; mlmm needs "
            "forward(positions: Tensor) -> Dict[str, Tensor] with positions (n, 3) in nm and "
            "'energy' in kJ/mol (README, *Your own model*)."
        )


def _check_region_buffers(model, path: Path, numbers: list[int], total_charge: int) -> None:
    if hasattr(model, "atomic_numbers"):
        stored = [int(z) for z in torch.as_tensor(model.atomic_numbers).reshape(-1).tolist()]
        if stored != numbers:
            raise InputError(
                f"{path.name} was built for atomic numbers {stored[:12]}{'...' if len(stored) > 12 else ''} "
                f"({len(stored)} atoms), but the ML region has {numbers[:12]}{'...' if len(numbers) > 12 else ''} "
                f"({len(numbers)} atoms); build the model for this region, in the same atom order."
            )
    if hasattr(model, "total_charge"):
        stored_charge = float(torch.as_tensor(model.total_charge).reshape(-1)[0])
        if round(stored_charge) != total_charge:
            raise InputError(
                f"{path.name} was built for total charge {stored_charge:+g} e, but the ML region has "
                f"{total_charge:+d} e; build the model for the region's charge."
            )


def _lattice(n: int) -> torch.Tensor:
    """n atoms on a simple cubic lattice 0.2 nm apart (nm)."""
    side = max(1, math.ceil(n ** (1.0 / 3.0)))
    grid = np.stack(np.meshgrid(*(np.arange(side),) * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    return torch.as_tensor(0.2 * grid[:n], dtype=torch.float64)


def _evaluate(model, path: Path, positions: torch.Tensor, total_charge: int) -> tuple[float, np.ndarray]:
    """Energy (kJ/mol) and forces ((n, 3) kJ/mol/nm) of ``model`` at ``positions``, checked."""
    x = positions.clone().requires_grad_(True)
    try:
        out = model(x)
    except Exception as exc:
        raise InputError(f"{path.name} fails on a test geometry of {len(x)} atoms: {exc}") from None
    if "energy" not in out:
        raise InputError(f"{path.name} returns {sorted(out)} but no 'energy'; return {{'energy': E_kJ_per_mol, ...}}.")
    energy = out["energy"]
    if energy.numel() != 1:
        raise InputError(f"{path.name} returns an energy of shape {tuple(energy.shape)}; return a 0-d tensor (kJ/mol).")
    if not energy.requires_grad:
        raise InputError(
            f"{path.name} returns an energy that does not depend differentiably on the positions; "
            "compute it from the positions tensor without detaching so that forces can come from autograd."
        )
    (gradient,) = torch.autograd.grad(energy.reshape(()), x, allow_unused=True)
    if gradient is None:
        raise InputError(f"{path.name} returns an energy that does not depend on the positions.")
    value = float(energy.detach())
    forces = -gradient.detach().numpy()
    if not (math.isfinite(value) and np.isfinite(forces).all()):
        raise InputError(
            f"{path.name} gives a non-finite energy ({value}) or forces on a test geometry of {len(x)} atoms; "
            "check that it expects positions in nm."
        )
    if "charges" in out:
        charges = out["charges"].detach()
        if tuple(charges.shape) != (len(x),):
            raise InputError(f"{path.name} returns charges of shape {tuple(charges.shape)}; expected ({len(x)},) in e.")
        if abs(float(charges.sum()) - total_charge) > 0.01:
            raise InputError(
                f"{path.name} returns charges summing to {float(charges.sum()):+.3f} e for a region of total "
                f"charge {total_charge:+d} e; they must sum to the region's charge."
            )
    return value, forces


def _check_units(model, path: Path, positions: torch.Tensor, total_charge: int) -> None:
    n = len(positions)
    energy0, _ = _evaluate(model, path, positions, total_charge)
    if n < 2:
        return
    centre = positions.mean(dim=0)
    stretched = centre + STRETCH_FACTOR * (positions - centre)
    energy1, forces1 = _evaluate(model, path, stretched, total_charge)
    rise = (energy1 - energy0) / n
    rms_force = float(np.sqrt((forces1**2).sum(axis=1).mean()))
    low_e, high_e = STRETCH_ENERGY_PER_ATOM
    low_f, high_f = STRETCH_RMS_FORCE
    if not (low_e <= rise <= high_e and low_f <= rms_force <= high_f):
        raise InputError(
            f"{path.name} gives implausible units: stretching the region by 10 % raises its energy by "
            f"{rise:.4g} kJ/mol per atom (expected {low_e:g} to {high_e:g}) with an RMS force of "
            f"{rms_force:.4g} kJ/mol/nm (expected {low_f:g} to {high_f:g}). {UNIT_ADVICE}"
        )
