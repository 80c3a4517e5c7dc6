"""``mlmm fe``: free-energy workflows.

    mlmm fe endstate runs/toluene-water --model aimnet2 --embedding mechanical electrostatic --json dg.json
    mlmm fe endstate systems/toluene-water.yaml --protocol quick --neq --plots plots/
    mlmm fe hydration --smiles CO CCO --model aimnet2 --json hyd.json
    mlmm fe hydration --freesolv-ids mobley_1636752 --json hyd.json --plots plots/
    mlmm fe hydration --devset --protocol quick --workers 2 --json devset.json
    mlmm fe protocol quick > my-protocol.yaml      # print a preset to edit

The system is a folder saved by ``mlmm build`` (or ``MolecularSystem.save``) or a YAML
recipe, which is built first. Work runs as Dask tasks: ``--scheduler serial`` (default),
``local`` (a LocalCluster of ``--workers`` processes) or a scheduler address. Energies
in the JSON are kJ/mol; the printed hydration table is in kcal/mol.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..embedding import EMBEDDINGS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "fe", help="free energies: ML/MM end-state corrections, hydration free energies",
        description="Free-energy workflows (MBAR over lambda windows, non-equilibrium switching, "
                    "alchemical hydration free energies against FreeSolv).",
    )
    commands = parser.add_subparsers(dest="fe_command", required=True, metavar="WORKFLOW")

    endstate = commands.add_parser(
        "endstate", help="dG(MM -> ML/MM) of a built system along lambda_ml",
        description="End-state correction dG = G(ML/MM) - G(MM) by MBAR over lambda_ml windows and, with --neq, "
                    "non-equilibrium switching (Jarzynski, BAR).",
    )
    endstate.add_argument("system", help="saved system folder or YAML recipe")
    endstate.add_argument("--model", default="aimnet2", help="ML potential (default aimnet2; see `mlmm models`)")
    endstate.add_argument("--embedding", nargs="+", default=["mechanical"], choices=EMBEDDINGS,
                          help="embedding(s) (default mechanical)")
    endstate.add_argument("--region", default="ligand", help="ML region: region name or MDTraj selection (default ligand)")
    endstate.add_argument("--neq", action=argparse.BooleanOptionalAction, default=None,
                          help="also run non-equilibrium switching (default: when the protocol has neq_switches > 0)")
    _common(endstate)
    endstate.set_defaults(handler=run_endstate)

    hydration = commands.add_parser(
        "hydration", help="absolute hydration free energies, MM and ML/MM",
        description="dG_hyd by decoupling the solute in water and in vacuum (MM), plus the end-state corrections in "
                    "both phases for ML/MM, compared with FreeSolv's experimental and GAFF values.",
    )
    source = hydration.add_mutually_exclusive_group(required=True)
    source.add_argument("--smiles", nargs="+", help="molecules as SMILES")
    source.add_argument("--freesolv-ids", nargs="+", metavar="ID", help="FreeSolv ids such as mobley_1636752")
    source.add_argument("--devset", action="store_true", help="the 10-molecule development set")
    hydration.add_argument("--model", default="aimnet2", help="ML potential, or 'none' for MM only (default aimnet2)")
    hydration.add_argument("--embedding", nargs="+", default=["mechanical", "electrostatic"],
                           choices=EMBEDDINGS, help="embeddings (default mechanical and electrostatic)")
    hydration.add_argument("--freesolv", metavar="PATH",
                           help="FreeSolv database.txt (default $MLMM_FREESOLV or ../shared/data/freesolv/database.txt)")
    hydration.add_argument("--padding", type=float, metavar="NM", help="water padding around the solute (nm, default 1.0)")
    _common(hydration)
    hydration.set_defaults(handler=run_hydration)

    protocol = commands.add_parser("protocol", help="print a protocol preset as YAML (a starting point to edit)")
    protocol.add_argument("preset", nargs="?", default="quick", help="smoke, quick, standard or production (default quick)")
    protocol.set_defaults(handler=run_protocol)


def _common(parser) -> None:
    parser.add_argument("--protocol", default="quick", metavar="PRESET|YAML",
                        help="smoke, quick (default), standard, production, or a YAML file (see `mlmm fe protocol`)")
    parser.add_argument("--platform", help="OpenMM platform (default from the protocol: CPU)")
    parser.add_argument("--threads", type=int, help="CPU threads per task (default from the protocol: 1)")
    parser.add_argument("--seed", type=int, help="base random seed (default from the protocol)")
    parser.add_argument("--scheduler", default="serial", metavar="serial|local|ADDRESS",
                        help="run tasks here one by one (default), on a local Dask cluster, or on a Dask scheduler")
    parser.add_argument("--workers", type=int, help="processes of the local Dask cluster (default: CPU count)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON (kJ/mol)")
    parser.add_argument("--plots", metavar="FOLDER", help="write overlap, dU/dlambda, convergence and summary plots here")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _protocol(args):
    from ..freeenergy import Protocol

    protocol = Protocol.load(args.protocol)
    changes = {name: getattr(args, name) for name in ("platform", "threads", "seed") if getattr(args, name) is not None}
    return protocol.replace(**changes) if changes else protocol


def _write_json(path, data) -> None:
    from ..atomic_io import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def _check_outputs(args) -> None:
    """Fail before any work when an output cannot be written."""
    from ..errors import InputError

    if args.json and Path(args.json).is_dir():
        raise InputError(f"--json {args.json} is a folder; give a file path such as results.json.")
    if args.plots and Path(args.plots).exists() and not Path(args.plots).is_dir():
        raise InputError(f"--plots {args.plots} is a file; give a folder.")


def _load_system(spec: str, progress: bool):
    from ..errors import InputError
    from ..molecular_system import METADATA_FILE, MolecularSystem

    path = Path(spec)
    if path.is_dir() and (path / METADATA_FILE).is_file():
        return MolecularSystem.load(path)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        from ..building import build_from_recipe

        return build_from_recipe(path, progress=progress)
    raise InputError(f"{spec} is neither a saved system folder (with {METADATA_FILE}) nor a YAML recipe.")


def run_endstate(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..freeenergy import endstate_correction

    if args.model.lower() == "none":
        raise InputError("an end-state correction goes from MM to ML/MM, so it needs an ML model: give --model "
                         "(see `mlmm models`); `mlmm fe hydration --model none` computes MM alone.")
    _check_outputs(args)
    protocol = _protocol(args)
    molecular_system = _load_system(args.system, progress=not args.quiet)
    results = endstate_correction(
        molecular_system, model=args.model, embeddings=args.embedding, protocol=protocol, region=args.region,
        neq=args.neq, scheduler=args.scheduler, workers=args.workers, progress=not args.quiet,
    )
    for embedding, leg in results.items():
        line = f"{embedding}: dG(MM -> ML/MM) = {leg.dG:.2f} ± {leg.dG_error:.2f} kJ/mol (MBAR"
        line += f", min overlap {leg.mbar.min_neighbour_overlap:.3f}, {'converged' if leg.mbar.converged else 'NOT converged'})"
        if leg.neq is not None and leg.neq.bar is not None:
            line += f"; BAR {leg.neq.bar['value']:.2f} ± {leg.neq.bar['error']:.2f} kJ/mol"
        print("\n    ".join([line, *leg.mbar.problems()]))
    if args.plots:
        from ..freeenergy.plots import plot_leg

        for leg in results.values():
            plot_leg(leg, args.plots, prefix="endstate-")
    if args.json:
        _write_json(args.json, {
            "units": "kJ/mol", "system": str(args.system), "model": args.model, "region": args.region,
            "protocol": protocol.to_dict(),
            "dG": {embedding: leg.mbar.to_dict()["dG"] for embedding, leg in results.items()},
            "legs": {embedding: leg.to_dict() for embedding, leg in results.items()},
        })
    return 0


def run_hydration(args: argparse.Namespace) -> int:
    from ..freeenergy import devset_ids, freesolv_entries, hydration_free_energies

    _check_outputs(args)
    protocol = _protocol(args)
    if args.smiles:
        molecules = _smiles_with_references(args.smiles, args.freesolv)
    else:
        molecules = freesolv_entries(devset_ids() if args.devset else args.freesolv_ids, args.freesolv)
    model = None if args.model.lower() == "none" else args.model
    report = hydration_free_energies(
        molecules, protocol=protocol, model=model, embeddings=args.embedding,
        build_options={"padding": args.padding} if args.padding is not None else None,
        scheduler=args.scheduler, workers=args.workers, progress=not args.quiet,
    )
    print(report.table())
    if args.plots:
        from ..freeenergy.plots import plot_hydration, plot_leg

        for result in report.results:
            for leg in result.legs.values():
                plot_leg(leg, Path(args.plots) / result.molecule.id)
        if any(result.molecule.experimental is not None for result in report.results):
            plot_hydration(report, Path(args.plots) / "hydration.png")
    if args.json:
        _write_json(args.json, report.to_dict())
    return 0


def _smiles_with_references(smiles: list[str], freesolv) -> list:
    """The SMILES, each replaced by its FreeSolv entry (experimental and GAFF values) where the
    database has the molecule; without a database at the default places, the SMILES as given."""
    from ..errors import InputError
    from ..freeenergy import with_freesolv_references

    try:
        molecules = with_freesolv_references(smiles, freesolv)
    except InputError:
        if freesolv is not None:  # a path the user named must exist
            raise
        print("mlmm fe hydration: FreeSolv database not found (--freesolv or $MLMM_FREESOLV); no experimental "
              "values to compare with.", file=sys.stderr)
        return list(smiles)
    found = [f"{text} = {entry.id} ({entry.name})" for text, entry in zip(smiles, molecules) if not isinstance(entry, str)]
    if found:
        print("mlmm fe hydration: in FreeSolv: " + "; ".join(found), file=sys.stderr)
    return molecules


def run_protocol(args: argparse.Namespace) -> int:
    import yaml

    from ..freeenergy import Protocol

    sys.stdout.write(yaml.safe_dump(Protocol.load(args.preset).to_dict(), sort_keys=False))
    return 0
