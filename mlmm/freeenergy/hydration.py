"""Absolute hydration free energies, MM and ML/MM, by decoupling plus end-state corrections.

Thermodynamic cycle (every dG is G(final) - G(initial), kJ/mol)::

      solute (vacuum, MM)  ---- dG_hyd(MM) ---->   solute (water, MM)
            |                                          |
     dG_decouple(vacuum)                         dG_decouple(water)
            v                                          v
      decoupled (vacuum)  ======= equal ======   decoupled (water)

    dG_hyd(MM) = dG_decouple(vacuum) - dG_decouple(water)

``dG_decouple`` switches the solute's charges off (also inside the solute, identically in
both phases), then its Lennard-Jones interactions with everything else (soft-core), with
openmmtools' ``AbsoluteAlchemicalFactory``. In vacuum the solute is alone, so only the
charge windows exist there. The non-interacting end states are the same in both phases,
so they cancel (no standard-state term: the concentration is the same).

ML/MM: with dG_corr(phase) = G(ML/MM, phase) - G(MM, phase) from LAMBDA_ML windows,

    G(ML/MM, water) - G(ML/MM, vacuum)
        = [G(MM, water) + dG_corr(water)] - [G(MM, vacuum) + dG_corr(vacuum)]
    dG_hyd(ML/MM) = dG_hyd(MM) + dG_corr(water, embedding) - dG_corr(vacuum).

In vacuum there is no environment, so every embedding (mechanical, electrostatic,
polarizable) is the same model (pure ML for the solute) and ``dG_corr(vacuum)`` is computed once and shared.
Independent legs' uncertainties add in quadrature.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..units import KJ_PER_KCAL
from .freesolv import FreeSolvEntry
from .legs import decoupling_leg, endstate_leg
from .protocol import Protocol
from .tasks import compute
from .workflow import LegResult, analyse_leg, graph_tasks, leg_graph

SOLVENT_DECOUPLING = "solvent-decoupling"
VACUUM_DECOUPLING = "vacuum-decoupling"
VACUUM_ENDSTATE = "vacuum-endstate"


def solvent_endstate(embedding: str) -> str:
    return f"solvent-endstate-{embedding}"


def _combine(*terms) -> dict:
    """sum of sign * value with errors in quadrature; terms are (sign, LegResult)."""
    value = sum(sign * leg.dG for sign, leg in terms)
    error = float(np.sqrt(sum(leg.dG_error**2 for _, leg in terms)))
    return {"value": float(value), "error": error}


@dataclass
class HydrationResult:
    """dG_hyd of one molecule (kJ/mol): MM, ML/MM per embedding, and every leg behind them."""

    molecule: FreeSolvEntry
    legs: dict[str, LegResult]
    embeddings: list[str] = field(default_factory=list)

    @property
    def dG_mm(self) -> dict:
        return _combine((+1, self.legs[VACUUM_DECOUPLING]), (-1, self.legs[SOLVENT_DECOUPLING]))

    @property
    def dG_mlmm(self) -> dict[str, dict]:
        values = {}
        for embedding in self.embeddings:
            values[embedding] = _combine(
                (+1, self.legs[VACUUM_DECOUPLING]), (-1, self.legs[SOLVENT_DECOUPLING]),
                (+1, self.legs[solvent_endstate(embedding)]), (-1, self.legs[VACUUM_ENDSTATE]),
            )
        return values

    @property
    def corrections(self) -> dict[str, dict]:
        """dG_corr(water, embedding) - dG_corr(vacuum): ML/MM minus MM hydration free energy."""
        return {e: _combine((+1, self.legs[solvent_endstate(e)]), (-1, self.legs[VACUUM_ENDSTATE]))
                for e in self.embeddings}

    @property
    def converged(self) -> bool:
        return all(leg.mbar.converged for leg in self.legs.values())

    def problems(self) -> list[str]:
        """``"leg: problem and remedy"`` for every leg that is not converged (see :meth:`MBARResult.problems`)."""
        return [f"{name}: {problem}" for name, leg in self.legs.items() for problem in leg.mbar.problems()]

    def to_dict(self, legs: bool = True) -> dict:
        m = self.molecule
        data = {
            "id": m.id, "smiles": m.smiles, "name": m.name,
            "experimental": None if m.experimental is None else {"value": m.experimental, "error": m.experimental_error},
            "gaff": None if m.gaff is None else {"value": m.gaff, "error": m.gaff_error},
            "dG_mm": self.dG_mm,
            "dG_mlmm": self.dG_mlmm,
            "mlmm_minus_mm": self.corrections,
            "converged": self.converged,
            "cpu_seconds": sum(leg.cpu_seconds for leg in self.legs.values()),
        }
        if legs:
            data["legs"] = {name: leg.to_dict() for name, leg in self.legs.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict, embeddings, kT: float) -> "HydrationResult":
        """A molecule read back from :meth:`to_dict` (written with its legs); ``kT`` in kJ/mol."""
        if "legs" not in data:
            raise InputError(f"molecule {data.get('id')!r} was saved without its legs (to_dict(legs=False)); "
                             "it cannot be read back.")

        def reference(key: str, part: str):
            return (data[key] or {}).get(part)

        molecule = FreeSolvEntry(
            id=data["id"], smiles=data["smiles"], name=data["name"],
            experimental=reference("experimental", "value"), experimental_error=reference("experimental", "error"),
            gaff=reference("gaff", "value"), gaff_error=reference("gaff", "error"),
        )
        legs = {name: LegResult.from_dict(leg, kT) for name, leg in data["legs"].items()}
        return cls(molecule, legs, list(embeddings))


def error_statistics(calculated, experimental) -> dict:
    """RMSE, MUE and mean signed error (calculated - experimental), kJ/mol and kcal/mol."""
    calc, expt = np.asarray(calculated, dtype=float), np.asarray(experimental, dtype=float)
    if calc.size == 0:
        return {"n": 0}
    diff = calc - expt
    stats = {"rmse": float(np.sqrt(np.mean(diff**2))), "mue": float(np.mean(np.abs(diff))), "mse": float(np.mean(diff))}
    return {"n": int(calc.size), **stats, **{f"{k}_kcal_per_mol": v / KJ_PER_KCAL for k, v in stats.items()}}


@dataclass
class HydrationReport:
    """All molecules of a run, with error statistics against experiment (kJ/mol)."""

    results: list[HydrationResult]
    protocol: Protocol
    model: str | None
    embeddings: list[str]
    wall_seconds: float = 0.0

    def statistics(self) -> dict:
        measured = [r for r in self.results if r.molecule.experimental is not None]
        expt = [r.molecule.experimental for r in measured]
        stats = {"mm": error_statistics([r.dG_mm["value"] for r in measured], expt)}
        for embedding in self.embeddings:
            stats[f"mlmm_{embedding}"] = error_statistics([r.dG_mlmm[embedding]["value"] for r in measured], expt)
        with_gaff = [r for r in measured if r.molecule.gaff is not None]
        stats["gaff_freesolv"] = error_statistics([r.molecule.gaff for r in with_gaff],
                                                  [r.molecule.experimental for r in with_gaff])
        return stats

    def to_dict(self, legs: bool = True) -> dict:
        return {
            "units": "kJ/mol",
            "model": self.model,
            "embeddings": self.embeddings,
            "protocol": self.protocol.to_dict(),
            "wall_seconds": self.wall_seconds,
            "molecules": [r.to_dict(legs=legs) for r in self.results],
            "statistics": self.statistics(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "HydrationReport":
        """The report :meth:`to_dict` wrote (with legs), e.g. to add molecules to a finished run."""
        protocol = Protocol(**data["protocol"])
        results = [HydrationResult.from_dict(m, data["embeddings"], protocol.kT) for m in data["molecules"]]
        return cls(results, protocol, data["model"], list(data["embeddings"]), float(data["wall_seconds"]))

    @classmethod
    def load(cls, path) -> "HydrationReport":
        """Read a report written by ``mlmm fe hydration --json`` or ``scripts/validate_freesolv.py``."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path} is not a readable hydration report ({type(exc).__name__}: {exc}).") from None

    def table(self) -> str:
        """A plain-text summary in kcal/mol (the unit FreeSolv and the literature use)."""
        k = KJ_PER_KCAL
        widths = {e: max(18, len(e) + 8) for e in self.embeddings}  # "-12.34±0.56" right-aligned under "ML/MM <embedding>"
        head = f"{'id':<16}{'name':<24}{'expt':>8}{'GAFF':>8}{'MM':>14}" + "".join(
            f"{'ML/MM ' + e:>{widths[e]}}" for e in self.embeddings)
        lines = ["dG_hyd in kcal/mol", head]
        for r in self.results:
            m = r.molecule
            expt = f"{m.experimental / k:8.2f}" if m.experimental is not None else f"{'-':>8}"
            gaff = f"{m.gaff / k:8.2f}" if m.gaff is not None else f"{'-':>8}"
            cells = f"{r.dG_mm['value'] / k:8.2f}±{r.dG_mm['error'] / k:<5.2f}"
            cells += "".join(f"{v['value'] / k:{widths[e] - 6}.2f}±{v['error'] / k:<5.2f}" for e, v in r.dG_mlmm.items())
            flag = "" if r.converged else "  *"
            lines.append(f"{m.id:<16}{m.name[:23]:<24}{expt}{gaff}{cells}{flag}")
        for name, s in self.statistics().items():
            if s.get("n"):
                lines.append(f"{name:<18} n={s['n']:<3} RMSE {s['rmse_kcal_per_mol']:.2f}  MUE {s['mue_kcal_per_mol']:.2f}"
                             f"  MSE {s['mse_kcal_per_mol']:+.2f} kcal/mol")
        unconverged = [r for r in self.results if not r.converged]
        if unconverged:
            lines.append("* not converged (the protocol's windows or lengths are too few for this molecule):")
            lines += [f"  {r.molecule.id} {problem}" for r in unconverged for problem in r.problems()]
        return "\n".join(lines)


def as_entries(molecules) -> list[FreeSolvEntry]:
    """FreeSolv entries as they are; SMILES strings become entries without reference values."""
    entries = []
    for i, molecule in enumerate(molecules):
        if isinstance(molecule, FreeSolvEntry):
            entries.append(molecule)
        elif isinstance(molecule, str) and molecule.strip():
            entries.append(FreeSolvEntry(id=f"smiles_{i}", smiles=molecule.strip(), name=molecule.strip()))
        else:
            raise InputError(f"molecule {molecule!r} is neither a SMILES string nor a FreeSolv entry.")
    if not entries:
        raise InputError("no molecules given; pass SMILES strings or FreeSolv ids.")
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise InputError(f"molecule ids repeat in {ids}; each molecule must appear once.")
    return entries


def _build(smiles: str, solvent: bool, options: dict):
    from ..building import build_system

    return build_system(ligands=[smiles], solvent=solvent, progress=False, **options)


def hydration_free_energies(
    molecules,
    protocol="quick",
    model: str | None = "aimnet2",
    embeddings=("mechanical", "electrostatic"),
    model_options: dict | None = None,
    build_options: dict | None = None,
    scheduler="serial",
    workers: int | None = None,
    progress: bool = True,
) -> HydrationReport:
    """dG_hyd for each molecule, MM and (with ``model``) ML/MM for each embedding.

    ``molecules``: SMILES strings or :class:`~mlmm.freeenergy.freesolv.FreeSolvEntry`
    objects (which carry experimental and GAFF values). Each molecule is built twice with
    :func:`mlmm.building.build_system` (in water with no added salt, and in vacuum);
    ``build_options`` are passed on to it (e.g. ``padding``). Every build, window and
    switch is one task of one graph, run by ``scheduler`` (see
    :func:`mlmm.freeenergy.tasks.compute`).
    """
    import time
    import uuid

    import dask

    protocol = Protocol.load(protocol)
    entries = as_entries(molecules)
    embeddings = [] if model is None else ([embeddings] if isinstance(embeddings, str) else list(embeddings))
    options = {"ionic_strength": 0.0, **(build_options or {})}
    n_decoupling = len(protocol.electrostatics_lambdas) + len(protocol.sterics_lambdas) - 1
    n_vacuum = len(protocol.electrostatics_lambdas)  # the solute alone: no sterics to decouple (see decoupling_leg)
    n_endstate = len(protocol.endstate_lambdas)

    run = f"{uuid.uuid4().hex[:8]}-"  # keeps the Dask keys of two calls on one cluster apart
    plan = []  # (entry, leg name, delayed leg, graph)
    for entry in entries:
        systems = {
            phase: dask.delayed(_build, pure=False)(entry.smiles, phase == "solvent", options,
                                                    dask_key_name=f"build-{run}{entry.id}-{phase}")
            for phase in ("solvent", "vacuum")
        }
        legs = {
            SOLVENT_DECOUPLING: (dask.delayed(decoupling_leg)(systems["solvent"], protocol, name=SOLVENT_DECOUPLING), n_decoupling),
            VACUUM_DECOUPLING: (dask.delayed(decoupling_leg)(systems["vacuum"], protocol, name=VACUUM_DECOUPLING), n_vacuum),
        }
        if model is not None:
            legs[VACUUM_ENDSTATE] = (dask.delayed(endstate_leg)(
                systems["vacuum"], model, "mechanical", protocol, model_options=model_options, name=VACUUM_ENDSTATE), n_endstate)
            for embedding in embeddings:
                name = solvent_endstate(embedding)
                legs[name] = (dask.delayed(endstate_leg)(
                    systems["solvent"], model, embedding, protocol, model_options=model_options, name=name), n_endstate)
        for name, (leg, n_states) in legs.items():
            plan.append((entry, name, leg, leg_graph(leg, n_states, protocol, f"{entry.id}/{name}", run=run)))

    tasks = []
    for _, _, leg, graph in plan:
        tasks += [leg] + graph_tasks(graph)
    start = time.perf_counter()
    outputs = compute(tasks, scheduler, workers, progress, description="hydration")
    wall = time.perf_counter() - start

    per_molecule: dict[str, dict] = {entry.id: {} for entry in entries}
    position = 0
    for entry, name, _, graph in plan:
        n = 1 + len(graph_tasks(graph))
        leg, leg_outputs = outputs[position], outputs[position + 1: position + n]
        per_molecule[entry.id][name] = analyse_leg(leg, leg_outputs, protocol)
        position += n
    results = [HydrationResult(entry, per_molecule[entry.id], embeddings) for entry in entries]
    return HydrationReport(results, protocol, model, embeddings, wall)
