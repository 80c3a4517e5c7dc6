"""ML potential plugins: discovery through entry points and the contract each one meets.

A plugin turns an ML region (its atomic numbers and total charge) into a TorchScript
*region model*::

    forward(positions: Tensor[n, 3]) -> Dict[str, Tensor]

- ``positions``: the region's atoms only, made whole, in nm, float32 or float64;
- ``"energy"``: 0-d tensor, kJ/mol, in the dtype of ``positions``, differentiable with
  respect to ``positions`` (forces come from autograd in :mod:`mlmm.ml_force`);
- ``"charges"`` (optional): (n,) atomic partial charges in e, differentiable, used by the
  electrostatic embedding;
- ``"energy_std"`` (optional): 0-d, kJ/mol, the spread of an ensemble, an uncertainty signal.

A region model may have a boolean attribute ``energy_only`` (False as built). A caller that
differentiates only the energy (the mechanical embedding) sets it True through
:func:`for_energy_only`; the model then also returns

- ``"forces"``: (n, 3) kJ/mol/nm, minus the gradient of its energy, in the dtype of
  ``positions``, computed by the model itself (the dense AIMNet2 does it by hand, faster
  than autograd), and its energy and charges need not be differentiable. Callers then run
  it without autograd (inputs that do not require grad) and apply any chain rule
  themselves.

A model that predicts charges may also export ``forces_in_potential(positions, potential)``:
the same outputs plus the ``"forces"`` of ``E + sum_i q_i potential_i`` (``potential``: (n,)
kJ/mol/e, held fixed), called without autograd; the electrostatic embedding then passes the
potential of the MM charges instead of differentiating through the model
(:class:`mlmm.embedding.electrostatic.ChargePotentialEmbedding`).

Atomic numbers and the total charge are baked into the module, conventionally as buffers
``atomic_numbers`` ((n,) int64) and ``total_charge`` (e); a model that carries them is
checked against the region it is used for. Every tensor stays on the device of
``positions``: no ``.item()``, ``.cpu()`` or NumPy inside.

:func:`mlmm.ml_force.create_ml_module` turns a region model into the full-system module of
a ``TorchForce``; :func:`mlmm.ml_force.add_ml_potential` does everything from a plugin name.

Plugins are found through the ``mlmm.potentials`` entry-point group, so another package
adds a model by declaring, in its own pyproject.toml::

    [project.entry-points."mlmm.potentials"]
    mymodel = "mypackage.module:MyPlugin"
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from importlib.metadata import entry_points

import torch

from .errors import InputError, ModelUnavailableError

ENTRY_POINT_GROUP = "mlmm.potentials"


class PotentialPlugin(ABC):
    """One family of ML potentials (AIMNet2, ANI-2x, MACE-OFF, a user's file, ...)."""

    #: name used on the command line and in :func:`load_plugin`
    name: str = ""
    #: one line for ``mlmm models``
    description: str = ""
    #: atomic numbers covered, or None for "whatever the model file says"
    elements: frozenset[int] | None = None
    #: whether a region with a nonzero total charge is supported
    supports_charge: bool = False
    #: whether the model predicts atomic charges (needed by the electrostatic embedding);
    #: None when that depends on the model file (then its output on the region decides)
    provides_charges: bool | None = False

    @abstractmethod
    def weights_available(self) -> bool:
        """True when the model can be created here without a download."""

    def status(self) -> str:
        """One line for ``mlmm models``: whether the model is usable here, and if not, why."""
        return "ready" if self.weights_available() else "weights not present (downloaded on first use when online)"

    @abstractmethod
    def create_model(self, atomic_numbers: Sequence[int], total_charge: int = 0, **options):
        """Return the TorchScript region model (see the module docstring).

        ``options`` are plugin-specific (documented by each plugin); unknown ones raise
        :class:`InputError`. Every plugin accepts ``positions``: the region's coordinates
        ((n, 3) nm, made whole), which a plugin may use to check the model on a real geometry.
        """

    def check_region(self, atomic_numbers: Sequence[int], total_charge: int) -> None:
        """Raise :class:`InputError` when the model cannot describe this region."""
        from openmm.app.element import Element

        if self.elements is not None:
            missing = sorted(set(int(z) for z in atomic_numbers) - set(self.elements))
            if missing:
                symbols = ", ".join(Element.getByAtomicNumber(z).symbol for z in missing)
                covered = ", ".join(Element.getByAtomicNumber(z).symbol for z in sorted(self.elements))
                raise InputError(
                    f"model '{self.name}' does not cover element(s) {symbols} in the ML region; "
                    f"it covers {covered}. Choose another model or a region without them."
                )
        if total_charge != 0 and not self.supports_charge:
            raise InputError(
                f"model '{self.name}' handles neutral regions only, but the ML region has total charge "
                f"{total_charge:+d} e; use a model with charge support (aimnet2) or a neutral region."
            )


def for_energy_only(region_model):
    """Tell ``region_model`` that only its energy will be differentiated; return it.

    Sets the optional ``energy_only`` attribute of the contract (module docstring) where the
    model has one (a scripted model's attribute can be set after scripting); other models
    are returned unchanged and differentiated by autograd.
    """
    if hasattr(region_model, "energy_only"):
        region_model.energy_only = True
    return region_model


def returns_forces(region_model) -> bool:
    """Whether ``region_model`` is in energy-only mode and so returns ``"forces"`` (module docstring)."""
    return bool(getattr(region_model, "energy_only", False))


def energy_and_forces(region_model, positions):
    """Energy (kJ/mol) and forces ((n, 3) kJ/mol/nm) of ``region_model`` at ``positions`` (n, 3) nm.

    As the TorchForce computes them: the model's own forces in energy-only mode, otherwise one
    autograd pass through its energy. Both come back without a gradient.
    """
    if returns_forces(region_model):
        with torch.no_grad():
            output = region_model(positions)
        return output["energy"].detach(), output["forces"].detach()
    leaf = positions.detach().requires_grad_(True)
    energy = region_model(leaf)["energy"]
    (gradient,) = torch.autograd.grad([energy], [leaf])
    return energy.detach(), -gradient


def check_options(plugin_name: str, options: dict, allowed: Sequence[str]) -> None:
    """Raise :class:`InputError` when ``options`` holds a name that ``allowed`` does not list."""
    unknown = sorted(set(options) - set(allowed) - {"positions"})
    if unknown:
        raise InputError(
            f"model '{plugin_name}' has no option(s) {', '.join(unknown)}; its options are "
            f"{', '.join(sorted(allowed)) or 'none'} (README, *ML potentials*, lists each model's options)."
        )


def _entry_points():
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def plugin_names() -> list[str]:
    """Names of all installed potential plugins."""
    return sorted(_entry_points())


def load_plugin(name: str) -> PotentialPlugin:
    """Instantiate the plugin registered under ``name``."""
    eps = _entry_points()
    if name not in eps:
        raise InputError(f"unknown model '{name}'; installed models: {', '.join(sorted(eps)) or 'none'} (see `mlmm models`).")
    try:
        plugin_class = eps[name].load()
    except ImportError as exc:
        raise ModelUnavailableError(f"model plugin '{name}' cannot be imported: {exc}") from exc
    return plugin_class()
