"""``mlmm bench``: how fast ML/MM runs against MM alone and against the host-copy path.

    mlmm bench                                   # toluene-water and t4l-toluene, full
    mlmm bench --quick --json bench.json --plot bench.png
    mlmm bench --systems runs/my-system --rows mm mts --mts 2
    mlmm bench --model ani2x --model-option member=0
    mlmm bench --embedding electrostatic         # every row but pythonforce (mechanical only, as openmm-ml)

Rows: mm (MM only), torchforce (ML/MM every step), mts (ML/MM, ML every k inner steps),
pythonforce (ML/MM through openmm.PythonForce with host copies), model (bare model call).
ms/step is per inner step (2 fs) for every dynamics row, per call for the model row.
Ratios come from one run, with the rows timed in interleaved rounds.
"""

from __future__ import annotations

import argparse
import sys

from .common import check_plot_suffix, parse_model_options

#: settings of --quick: toluene-water only, few steps and repeats (about a minute on 2 cores)
QUICK = {"steps": 10, "repeats": 3, "warmup": 3, "minimize_iterations": 50}


def torch_threads_argument(text: str) -> int | str:
    """``--torch-threads``: a positive count or ``auto``."""
    from ..errors import InputError
    from ..threads import parse_torch_threads

    try:
        return parse_torch_threads(text, f"--torch-threads {text!r}")
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers) -> None:
    from ..bench.harness import DEFAULT_MTS_FACTOR, DEFAULT_SYSTEMS, ROWS
    from ..embedding import EMBEDDINGS

    parser = subparsers.add_parser(
        "bench", help="benchmark ML/MM against MM and the host-copy (PythonForce) path",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--systems", nargs="+", metavar="NAME|PATH",
                        help=f"recipe names in systems/, recipe files or saved folders (default: "
                             f"{' '.join(DEFAULT_SYSTEMS)}; with --quick: {DEFAULT_SYSTEMS[0]})")
    parser.add_argument("--quick", action="store_true",
                        help="few steps and repeats, toluene-water only unless --systems is given")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--plot", metavar="PATH", help="draw ns/day per row and system (png, pdf, svg)")
    parser.add_argument("--rows", nargs="+", choices=ROWS, metavar="ROW",
                        help=f"rows to time (default: all of {', '.join(ROWS)}; pythonforce only with the "
                             "mechanical embedding)")
    parser.add_argument("--steps", type=int, help="inner steps (model: calls) per timed block (default 20; quick 10)")
    parser.add_argument("--repeats", type=int, help="timed blocks per row; the median is reported (default 5; quick 3)")
    parser.add_argument("--warmup", type=int, help="inner steps before timing (default 10; quick 3)")
    parser.add_argument("-k", "--mts", type=int, dest="mts_factor",
                        help=f"MTS factor of the mts row (default {DEFAULT_MTS_FACTOR})")
    parser.add_argument("--model", help="ML potential (default aimnet2)")
    parser.add_argument("--model-option", action="append", metavar="KEY=VALUE", dest="model_options",
                        help="option of the model's plugin, repeatable (e.g. member=0, weights=PATH)")
    parser.add_argument("--region", help="ML region (default ligand)")
    parser.add_argument("--embedding", choices=EMBEDDINGS, help="embedding of the ML/MM rows (default mechanical)")
    parser.add_argument("--platform", help="OpenMM platform (default: CUDA when present, else CPU)")
    parser.add_argument("--threads", type=int, help="OpenMM CPU platform threads (default: OpenMM's)")
    parser.add_argument("--torch-threads", type=torch_threads_argument, metavar="N|auto",
                        help="PyTorch intra-op threads (default auto: a probe of the ML/MM dynamics picks the "
                             "fastest count, see mlmm.threads)")
    parser.add_argument("--minimize-iterations", type=int, help="MM minimization before timing (default 200; quick 50)")
    parser.add_argument("--no-progress", action="store_false", dest="progress", help="no progress display")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from ..bench import BenchmarkSettings, markdown_table, plot, run_benchmarks, write_json
    from ..bench.harness import DEFAULT_SYSTEMS

    check_plot_suffix(args.plot)
    options = dict(QUICK) if args.quick else {}
    for name in ("steps", "repeats", "warmup", "mts_factor", "model", "region", "embedding", "platform", "threads",
                 "torch_threads", "minimize_iterations"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.model_options:
        options["model_options"] = parse_model_options(args.model_options)
    if args.rows:
        options["rows"] = tuple(dict.fromkeys(args.rows))
    settings = BenchmarkSettings(**options).validate()
    systems = args.systems or (DEFAULT_SYSTEMS[:1] if args.quick else DEFAULT_SYSTEMS)
    report = run_benchmarks(systems, settings, progress=args.progress)
    if args.json:
        write_json(report, args.json)
    if args.plot:
        plot(report, args.plot)
    machine = report["machine"]
    print(f"{machine['cpu']}, {machine['usable_cores']} cores, {machine['platform']}, OpenMM threads "
          f"{machine['openmm_cpu_threads']}, torch threads {machine['torch_threads']}, load average "
          f"{machine['load_average_1_5_15_min'][0]:.2f} at start, {machine['load_average_at_end'][0]:.2f} at end",
          file=sys.stdout)
    print(markdown_table(report))
    return 0

