"""ANI-2x (TorchANI): wB97X/6-31G(d), elements H C N O F S Cl, neutral regions only.

The 8-network ensemble is used (``"energy_std"`` is its spread) unless ``member`` (0-7)
picks one network. Weights: ``weights=PATH`` (TorchANI's ``ani2x_state_dict.pt``), else
TorchANI's cache (``$TORCHANI_DATA_DIR`` or ``~/.local/share/Torchani``, ``StateDicts/``),
else TorchANI downloads them (online only). The architecture is TorchANI's own
``Assembler`` recipe for ANI-2x, so a state dict from TorchANI loads as is.

ANI works in Angstrom, Hartree and float32 (``dtype="float64"`` is available); the
region model converts at its boundary. In float32 the total energy (about -270 Hartree for
toluene) is resolved to about 0.1 kJ/mol; forces are unaffected.
Note: TorchANI dispatches atoms to per-element networks with ``nonzero``, which
synchronises a GPU with the host once per network; that cost lies inside TorchANI.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import Tensor

from mlmm.errors import InputError, ModelUnavailableError
from mlmm.potentials import PotentialPlugin, check_options
from mlmm.units import ANGSTROM_PER_NM

STATE_DICT_FILE = "ani2x_state_dict.pt"
N_MEMBERS = 8
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def torchani_installed() -> bool:
    return importlib.util.find_spec("torchani") is not None


def cached_weights() -> Path:
    """Where TorchANI keeps the downloaded ANI-2x state dict (the file may not exist)."""
    root = os.environ.get("TORCHANI_DATA_DIR") or Path.home() / ".local" / "share" / "Torchani"
    return Path(root) / "StateDicts" / STATE_DICT_FILE


def ani2x_architecture():
    """TorchANI's ANI-2x model with freshly initialised weights (torchani.models.ANI2x's recipe)."""
    from torchani.arch import Assembler
    from torchani.utils import SYMBOLS_2X

    assembler = Assembler(periodic_table_index=True)
    assembler.set_symbols(SYMBOLS_2X)
    assembler.set_global_cutoff_fn("cosine")
    assembler.set_aev_computer(radial="ani2x", angular="ani2x", strategy="pyaev")
    assembler.set_atomic_networks(ctor="ani2x")
    assembler.set_neighborlist("all_pairs")
    assembler.set_gsaes_as_self_energies("wb97x-631gd")
    return assembler.assemble(N_MEMBERS)


class ANIRegionModel(torch.nn.Module):
    """Region model of a TorchANI model: positions (n, 3) nm -> energy (kJ/mol)."""

    def __init__(self, ani_model, atomic_numbers, ensemble: bool, kj_per_mol_per_hartree: float, dtype: torch.dtype):
        super().__init__()
        self.ani = ani_model
        self.ensemble = ensemble
        self.dtype = dtype
        self.angstrom_per_nm = ANGSTROM_PER_NM
        self.kj_per_mol_per_hartree = kj_per_mol_per_hartree
        self.register_buffer("atomic_numbers", torch.tensor(list(atomic_numbers), dtype=torch.long))
        self.register_buffer("total_charge", torch.zeros(1))

    def forward(self, positions: Tensor) -> dict[str, Tensor]:
        centred = positions - positions.mean(dim=0)
        coordinates = (centred * self.angstrom_per_nm).to(self.dtype).unsqueeze(0)
        species = self.atomic_numbers.unsqueeze(0)
        energies = self.ani((species, coordinates), ensemble_values=self.ensemble).energies.reshape(-1)
        result = {"energy": (energies.mean() * self.kj_per_mol_per_hartree).to(positions.dtype)}
        if self.ensemble:
            result["energy_std"] = (energies.std() * self.kj_per_mol_per_hartree).to(positions.dtype)
        return result


class ANI2xPlugin(PotentialPlugin):
    """ANI-2x via TorchANI. Options: ``weights`` (state-dict file), ``member`` (0-7 or None),
    ``dtype`` ("float32", TorchANI's default, or "float64")."""

    name = "ani2x"
    description = "ANI-2x (TorchANI), wB97X/6-31G(d); neutral only; 8-network ensemble"
    elements = frozenset({1, 6, 7, 8, 9, 16, 17})
    supports_charge = False
    provides_charges = False

    def weights_available(self) -> bool:
        return torchani_installed() and cached_weights().is_file()

    def status(self) -> str:
        if not torchani_installed():
            return "package torchani not installed (pip install 'mlmm[models]' or torchani==2.9.0)"
        if not cached_weights().is_file():
            return f"weights not cached at {cached_weights()} (downloaded on first use when online, or weights=PATH)"
        return "ready"

    def create_model(self, atomic_numbers, total_charge: int = 0, **options) -> torch.jit.ScriptModule:
        check_options(self.name, options, ("weights", "member", "dtype"))
        dtype_name = str(options.get("dtype", "float32"))
        if dtype_name not in DTYPES:
            raise InputError(f"ani2x dtype {dtype_name!r} is unknown; choose float32 or float64.")
        member = options.get("member")
        if member is not None and member not in range(N_MEMBERS):
            raise InputError(f"ani2x member {member!r} does not exist; choose 0 to {N_MEMBERS - 1} or None for all.")
        self.check_region(atomic_numbers, int(total_charge))
        if not torchani_installed():
            raise ModelUnavailableError(f"model 'ani2x' cannot be used: {self.status()}.")
        from torchani.units import HARTREE_TO_KJOULEPERMOL

        model = ani2x_architecture()
        model.load_state_dict(_state_dict(options.get("weights")))
        if member is not None:
            model = model[int(member)]
        model.requires_grad_(False)
        model.to(DTYPES[dtype_name])
        region = ANIRegionModel(model, atomic_numbers, member is None, HARTREE_TO_KJOULEPERMOL, DTYPES[dtype_name])
        return torch.jit.script(region)


def _state_dict(weights) -> dict:
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise InputError(f"ANI-2x weights file {str(path)!r} does not exist; give the path of {STATE_DICT_FILE}.")
        return torch.load(str(path), map_location="cpu", weights_only=True)
    if cached_weights().is_file():
        return torch.load(str(cached_weights()), map_location="cpu", weights_only=True)
    try:
        import torchani

        return torchani.models.ANI2x().state_dict()
    except Exception as exc:
        raise ModelUnavailableError(
            f"ANI-2x weights are not cached at {cached_weights()} and downloading them failed "
            f"({type(exc).__name__}: {str(exc)[:200]}). Download {STATE_DICT_FILE} from the Hugging Face "
            "repository roitberg-group/ani2x on a machine with internet and pass weights=PATH "
            "(or put it at that cache path)."
        ) from None
