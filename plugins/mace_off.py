"""MACE-OFF23 (mace-torch): organic force field at wB97M-D3(BJ), neutral regions only.

Elements H C N O F P S Cl Br I. Option ``size``: "small" (default), "medium" or "large".
Weights: ``weights=PATH`` (a MACE model file), else mace-torch's cache
(``$XDG_CACHE_HOME/mace`` or ``~/.cache/mace``, file ``MACE-OFF23_<size>.model``), else
mace-torch downloads it (online only). MACE-OFF23 is distributed under the Academic
Software License (no commercial use).

The region model evaluates MACE on all pairs of region atoms: MACE's polynomial envelope
is exactly zero beyond its cutoff, so this equals a neighbour-list evaluation, and the
fixed edge list needs no neighbour search (no host synchronisation) inside the step. Its
cost grows with n^2, which suits ligand-sized regions. Positions are converted to
Angstrom and to the model's dtype (``dtype`` option, "float32" by default, the precision
MACE recommends for MD), the energy from eV to kJ/mol. The model's total ``"energy"``
(including its atomic reference energies) is returned, as for the other plugins.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import Tensor

from mlmm.errors import InputError, ModelUnavailableError
from mlmm.potentials import PotentialPlugin, check_options
from mlmm.units import ANGSTROM_PER_NM, KJ_PER_MOL_PER_EV

SIZES = ("small", "medium", "large")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def mace_installed() -> bool:
    return importlib.util.find_spec("mace") is not None


def cached_weights(size: str = "small") -> Path:
    """Where mace-torch keeps the downloaded MACE-OFF23 model (the file may not exist)."""
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mace"
    return root / f"MACE-OFF23_{size}.model"


class MACERegionModel(torch.nn.Module):
    """Region model of a MACE model on all atom pairs: positions (n, 3) nm -> energy (kJ/mol)."""

    def __init__(self, mace_model, atomic_numbers, dtype: torch.dtype):
        super().__init__()
        self.mace = mace_model
        self.dtype = dtype
        self.angstrom_per_nm = ANGSTROM_PER_NM
        self.kj_per_mol_per_ev = KJ_PER_MOL_PER_EV
        numbers = [int(z) for z in atomic_numbers]
        table = [int(z) for z in mace_model.atomic_numbers.tolist()]
        n = len(numbers)
        index = torch.tensor([table.index(z) for z in numbers], dtype=torch.long)
        senders, receivers = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        off_diagonal = senders != receivers
        edge_index = torch.stack([senders[off_diagonal], receivers[off_diagonal]])
        self.register_buffer("atomic_numbers", torch.tensor(numbers, dtype=torch.long))
        self.register_buffer("total_charge", torch.zeros(1))
        self.register_buffer("node_attrs", torch.nn.functional.one_hot(index, len(table)).to(dtype))
        self.register_buffer("edge_index", edge_index)
        self.register_buffer("shifts", torch.zeros(edge_index.shape[1], 3, dtype=dtype))
        self.register_buffer("cell", torch.zeros(3, 3, dtype=dtype))
        self.register_buffer("batch", torch.zeros(n, dtype=torch.long))
        self.register_buffer("ptr", torch.tensor([0, n], dtype=torch.long))

    def forward(self, positions: Tensor) -> dict[str, Tensor]:
        centred = positions - positions.mean(dim=0)
        data = {
            "positions": (centred * self.angstrom_per_nm).to(self.dtype),
            "node_attrs": self.node_attrs,
            "edge_index": self.edge_index,
            "shifts": self.shifts,
            "unit_shifts": self.shifts,
            "cell": self.cell,
            "batch": self.batch,
            "ptr": self.ptr,
        }
        energy = self.mace(data, compute_force=False)["energy"]
        assert energy is not None
        return {"energy": (energy.sum() * self.kj_per_mol_per_ev).to(positions.dtype)}


class MACEOFFPlugin(PotentialPlugin):
    """MACE-OFF23 via mace-torch. Options: ``size``, ``weights`` (model file), ``dtype``."""

    name = "mace-off"
    description = "MACE-OFF23 (mace-torch), wB97M-D3(BJ); neutral only; ASL licence"
    elements = frozenset({1, 6, 7, 8, 9, 15, 16, 17, 35, 53})
    supports_charge = False
    provides_charges = False

    def weights_available(self) -> bool:
        return mace_installed() and cached_weights().is_file()

    def status(self) -> str:
        if not mace_installed():
            return "package mace-torch not installed (pip install 'mlmm[models]' or mace-torch==0.3.16)"
        if not cached_weights().is_file():
            return f"weights not cached at {cached_weights()} (downloaded on first use when online, or weights=PATH)"
        return "ready"

    def create_model(self, atomic_numbers, total_charge: int = 0, **options) -> torch.jit.ScriptModule:
        check_options(self.name, options, ("size", "weights", "dtype"))
        size = str(options.get("size", "small")).lower()
        if size not in SIZES:
            raise InputError(f"mace-off size {size!r} is unknown; choose one of {', '.join(SIZES)}.")
        dtype_name = str(options.get("dtype", "float32"))
        if dtype_name not in DTYPES:
            raise InputError(f"mace-off dtype {dtype_name!r} is unknown; choose float32 or float64.")
        self.check_region(atomic_numbers, int(total_charge))
        if not mace_installed():
            raise ModelUnavailableError(f"model 'mace-off' cannot be used: {self.status()}.")
        import mace  # noqa: F401  (first: it lets e3nn 0.4.4 load its constants under torch >= 2.6)
        from e3nn.util import jit

        model = _load_model(size, options.get("weights")).to(DTYPES[dtype_name])
        model.requires_grad_(False)
        model.eval()
        table = {int(z) for z in model.atomic_numbers.tolist()}
        missing = sorted({int(z) for z in atomic_numbers} - table)
        if missing:
            raise InputError(f"this MACE model does not cover atomic number(s) {missing}; it covers {sorted(table)}.")
        region = MACERegionModel(jit.compile(model), atomic_numbers, DTYPES[dtype_name])
        return torch.jit.script(region)


def _load_model(size: str, weights) -> torch.nn.Module:
    """The MACE model object from ``weights``, the cache, or a download (mace_off)."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise InputError(f"MACE weights file {str(path)!r} does not exist; give the path of a .model file.")
    else:
        path = cached_weights(size)
        if not path.is_file():
            from mace.calculators.foundations_models import mace_off

            try:
                mace_off(model=size, device="cpu", return_raw_model=True)
            except Exception as exc:
                if not path.is_file():
                    raise ModelUnavailableError(
                        f"MACE-OFF23 {size} weights are not cached at {path} and downloading them failed "
                        f"({type(exc).__name__}: {str(exc)[:200]}). Download MACE-OFF23_{size}.model from "
                        "https://github.com/ACEsuit/mace-off on a machine with internet and pass weights=PATH "
                        "(or put it at that cache path)."
                    ) from None
    # MACE model files are pickled modules: only load files you trust.
    return torch.load(str(path), map_location="cpu", weights_only=False)
