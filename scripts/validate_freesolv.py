"""Hydration free energies of the FreeSolv development set, MM and ML/MM, against experiment.

    .venv/bin/python scripts/validate_freesolv.py --protocol quick --workers 2 --output runs/devset

Molecules run one after another on one Dask cluster (each molecule's builds, windows and
legs in parallel); after each molecule the JSON report and the plots so far are written to
``--output``, so a long run that stops early keeps what it finished, and ``--resume`` runs
only the molecules its report does not have yet (same protocol, model and embeddings). The
report is the one ``mlmm fe hydration --json`` writes (kJ/mol), with RMSE and MUE for MM,
each ML/MM embedding and FreeSolv's GAFF column over the same molecules; the table printed is
in kcal/mol.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path

import mlmm  # noqa: F401  (imports torch before openmm)

from mlmm.atomic_io import write_text_atomic
from mlmm.embedding import EMBEDDINGS
from mlmm.errors import MlmmError
from mlmm.freeenergy import Protocol, devset_ids, freesolv_entries, hydration_free_energies
from mlmm.freeenergy.hydration import HydrationReport
from mlmm.freeenergy.plots import plot_hydration, plot_leg


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", nargs="+", help="FreeSolv ids (default: the 10-molecule development set)")
    parser.add_argument("--protocol", default="quick", help="preset or YAML file (default quick)")
    parser.add_argument("--model", default="aimnet2", help="ML potential, or 'none' for MM only")
    parser.add_argument("--embedding", nargs="+", default=["mechanical", "electrostatic"], choices=EMBEDDINGS,
                        help="ML/MM embeddings (default mechanical electrostatic)")
    parser.add_argument("--scheduler", default="local", help="local (default) or a Dask scheduler address")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster processes (default 2)")
    parser.add_argument("--freesolv", help="FreeSolv database.txt (default $MLMM_FREESOLV or ../shared/data/...)")
    parser.add_argument("--output", default="runs/freesolv-validation", help="folder for the JSON and plots")
    parser.add_argument("--resume", action="store_true",
                        help="keep the molecules already in OUTPUT/report.json and run only the missing ones")
    return parser.parse_args(argv)


def finished_report(path: Path, resume: bool, protocol, model, embeddings) -> HydrationReport | None:
    """The report to continue (``--resume``), None when there is none; refuses to overwrite one otherwise."""
    if not path.exists():
        return None
    if not resume:
        raise SystemExit(f"error: {path} exists; pass --resume to add the missing molecules to it, "
                         "or choose another --output.")
    previous = HydrationReport.load(path)
    for what, before, now in (("protocol", previous.protocol, protocol), ("model", previous.model, model),
                              ("embeddings", previous.embeddings, list(embeddings))):
        if before != now:
            raise SystemExit(f"error: {path} was computed with {what} {before!r}, this run asks for {now!r}; "
                             "resume it with the same settings or choose another --output.")
    return previous


def main(argv=None) -> int:
    from distributed import Client, LocalCluster

    args = parse_args(argv)
    protocol = Protocol.load(args.protocol)
    entries = freesolv_entries(args.ids or devset_ids(), args.freesolv)
    model = None if args.model.lower() == "none" else args.model
    embeddings = args.embedding if model else []
    output = Path(args.output)
    previous = finished_report(output / "report.json", args.resume, protocol, model, embeddings)
    results = list(previous.results) if previous else []
    done = {r.molecule.id for r in results}
    entries = [entry for entry in entries if entry.id not in done]
    if done:
        print(f"resuming: {len(done)} molecule(s) already in {output / 'report.json'}, {len(entries)} to run", flush=True)
    output.mkdir(parents=True, exist_ok=True)

    if args.scheduler == "local":
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        cluster, client = None, Client(args.scheduler)
    start = time.perf_counter() - (previous.wall_seconds if previous else 0.0)
    failed = []
    try:
        for number, entry in enumerate(entries, start=1):
            print(f"[{number}/{len(entries)}] {entry.id} {entry.name} ({entry.smiles})", flush=True)
            try:
                report = hydration_free_energies([entry], protocol=protocol, model=model, embeddings=embeddings,
                                                 scheduler=client, progress=True)
            except Exception as exc:  # one molecule's failure (e.g. MBAR without overlap) does not stop the rest
                failed.append(entry.id)
                detail = str(exc) if isinstance(exc, MlmmError) else traceback.format_exc()
                print(f"{entry.id}: failed: {detail}", flush=True)
                continue
            results += report.results
            so_far = HydrationReport(results, protocol, model, embeddings, time.perf_counter() - start)
            write_text_atomic(output / "report.json", json.dumps(so_far.to_dict(), indent=1) + "\n")
            for leg in report.results[0].legs.values():
                plot_leg(leg, output / entry.id)
            plot_hydration(so_far, output / "hydration.png")
            print(so_far.table(), flush=True)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    print(f"wall time {time.perf_counter() - start:.0f} s for {len(results)} molecules; report in {output}")
    if failed:
        print(f"failed: {' '.join(failed)} (rerun them with --resume)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
