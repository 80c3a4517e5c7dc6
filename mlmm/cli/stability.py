"""``mlmm stability``: the MTS stability study (see :mod:`mlmm.stability`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..embedding import EMBEDDINGS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "stability", help="MTS stability study: k, inner step, HMR, embeddings",
        description="Run ML/MM with difference splitting over a grid of MTS factors and inner steps; report "
                    "stability, temperature, bond-length deviations and NVE drift. Resumes from --json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--systems", nargs="+", default=["systems/toluene-water.yaml"],
                        help="YAML recipes (mlmm build); each is built with and without HMR as --hmr asks")
    parser.add_argument("--embeddings", nargs="+", default=["mechanical", "electrostatic"],
                        choices=EMBEDDINGS)
    parser.add_argument("--inner", nargs="+", type=float, default=[1.0, 2.0], help="inner time steps (fs)")
    parser.add_argument("--k", nargs="+", type=int, default=[1, 2, 3, 4, 6], help="MTS factors")
    parser.add_argument("--hmr", nargs="+", default=["no", "yes"], choices=["no", "yes"],
                        help="hydrogen mass repartitioning (3 amu) off/on")
    parser.add_argument("--equilibration", default="1ps",
                        help="NVT equilibration per configuration (discarded); a time such as 500fs, a bare number in ps")
    parser.add_argument("--nvt-length", default="100ps", help="NVT length per configuration (a time, e.g. 10ps)")
    parser.add_argument("--nve-length", default="10ps", help="NVE length per configuration (drift; a time, e.g. 2ps)")
    parser.add_argument("--platform", default="CPU", help="OpenMM platform: CPU, CUDA, OpenCL or Reference")
    parser.add_argument("--json", required=True, help="results file (resumed if it exists)")
    parser.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                        help="first add the rows of these results files (studies run side by side) to --json")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: print the table of every row in --json (and the configurations saved in "
                             "progress beside it) and write --markdown and --plot")
    parser.add_argument("--markdown", help="write the results table here")
    parser.add_argument("--plot", help="draw bond deviation and NVE drift against the outer step (png, pdf, svg, ...)")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from ..atomic_io import write_text_atomic
    from ..errors import InputError
    from ..stability import describe_progress, load_results, markdown_table, merge_results, plot, progress_folder_of
    from ..units import parse_time_ps
    from .common import check_plot_suffix

    for k in args.k:
        if k < 1:
            raise InputError(f"--k {k}: MTS factors must be integers >= 1.")
    for dt in args.inner:
        if not dt > 0:
            raise InputError(f"--inner {dt}: inner time steps must be positive (fs).")
    check_plot_suffix(args.plot)
    for spec in args.systems:
        if Path(spec).is_dir():
            raise InputError(f"--systems {spec} is a system folder; the study builds each system from its recipe "
                             "(with and without hydrogen mass repartitioning), so give the YAML recipe, "
                             "e.g. systems/toluene-water.yaml.")
    lengths_ps = {"nvt_ps": parse_time_ps(args.nvt_length, "--nvt-length"),
                  "nve_ps": parse_time_ps(args.nve_length, "--nve-length"),
                  "equilibration_ps": parse_time_ps(args.equilibration, "--equilibration")}
    if args.merge:
        merged = merge_results(([args.json] if Path(args.json).exists() else []) + args.merge)
        write_text_atomic(args.json, json.dumps(merged, indent=1))
    in_progress = describe_progress(progress_folder_of(args.json)) if args.report_only else []
    if args.report_only:  # a study whose first configuration is still running has no --json yet
        results = list(load_results(args.json).values()) if Path(args.json).exists() or not in_progress else []
    else:
        results = _run(args, **lengths_ps)
    table = markdown_table(results)
    print("\n".join([table, *in_progress]))
    if args.markdown:
        write_text_atomic(args.markdown, table)
    if args.plot:
        plot(results, args.plot)
    return 0


def _run(args, nvt_ps: float, nve_ps: float, equilibration_ps: float) -> list[dict]:
    """Run the grid the arguments describe (resuming from --json); its rows."""
    from ..building import build_from_recipe
    from ..stability import run_study, study_grid

    recipes = {Path(s).stem: s for s in args.systems}

    def build(name, hmr):
        return build_from_recipe(recipes[name], hydrogen_mass=3.0 if hmr else None, progress=False)

    configs = study_grid(list(recipes), args.embeddings, args.inner, args.k, [h == "yes" for h in args.hmr])
    return run_study(configs, build, args.json, nvt_ps, nve_ps, platform=args.platform,
                     equilibration_ps=equilibration_ps)
