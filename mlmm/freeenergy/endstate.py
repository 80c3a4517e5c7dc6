"""End-state correction dG(MM -> ML/MM) of a built system.

The mixed System of :func:`mlmm.embedding.create_mixed_system` has the potential
``U(lambda) = U_MM + lambda * [E_ML(region) + E_coupling - E_MM(region)]``; the correction is

    dG_corr = G(lambda = 1) - G(lambda = 0) = G(ML/MM) - G(MM),

estimated with MBAR over equilibrium windows in LAMBDA_ML (with the overlap matrix, the
statistical uncertainty, <dU/dlambda> per window and forward/reverse convergence) and,
when the protocol asks for switches, from non-equilibrium switching started from MM and
from ML/MM equilibrium samples: Jarzynski in each direction and BAR over both (Crooks).
The ML and MM energies have different zeros, so dG_corr carries a large constant that
only cancels in differences (e.g. between phases in a hydration cycle).
"""

from __future__ import annotations

from .legs import endstate_leg
from .protocol import Protocol
from .workflow import LegResult, run_legs


def endstate_correction(
    molecular_system,
    model: str = "aimnet2",
    embeddings=("mechanical",),
    protocol="quick",
    region="ligand",
    model_options: dict | None = None,
    neq: bool | None = None,
    scheduler="serial",
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, LegResult]:
    """dG(MM -> ML/MM) of ``molecular_system`` for each embedding, in kJ/mol.

    Parameters
    ----------
    molecular_system: a :class:`~mlmm.molecular_system.MolecularSystem` (pure MM).
    model, region, model_options: as for ``create_mixed_system``.
    embeddings: ``"mechanical"``, ``"electrostatic"`` or a sequence of both.
    protocol: a :class:`Protocol`, a preset name or a YAML file.
    neq: run non-equilibrium switching; by default when ``protocol.neq_switches > 0``.
    scheduler, workers: see :func:`mlmm.freeenergy.tasks.compute`.

    Returns ``{embedding: LegResult}``; each result's ``mbar`` holds the MBAR estimate and
    its diagnostics, ``neq`` the switching estimates (or None).
    """
    protocol = Protocol.load(protocol)
    embeddings = [embeddings] if isinstance(embeddings, str) else list(embeddings)
    legs = [endstate_leg(molecular_system, model, embedding, protocol, region, model_options, name=embedding)
            for embedding in embeddings]
    switching = protocol.neq_switches > 0 if neq is None else bool(neq)
    if switching and protocol.neq_switches == 0:
        protocol = protocol.replace(neq_switches=min(20, protocol.samples_per_window))
    return run_legs(legs, protocol, scheduler, workers, neq=switching, progress=progress, label=f"endstate-{model}")
