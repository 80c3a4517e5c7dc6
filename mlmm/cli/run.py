"""``mlmm run``: a production run from a built system folder or a YAML recipe.

    mlmm run systems/toluene-water.yaml -o runs/tw --model aimnet2 --mts 2 --length 10ps
    mlmm run --resume -o runs/tw                      # continue after a crash
    mlmm run --resume -o runs/tw --length 20ps        # extend a finished run

Options left out take the defaults of :class:`mlmm.running.RunConfig`; with ``--resume``
the configuration comes from OUT/run.json and only the length, platform and precision may
be given again.
"""

from __future__ import annotations

import argparse

from ..embedding import EMBEDDINGS
from ..errors import InputError
from ..splitting import DEFAULT_INNER_TIMESTEP_FS, DEFAULT_MTS_FACTOR
from .common import parse_model_options

#: options that --resume accepts; everything else is fixed by the run's run.json
RESUME_OPTIONS = ("steps", "length", "platform", "precision")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="run ML/MM (or MM) molecular dynamics with checkpoints, resumable after a crash",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", nargs="?", help="built system folder (mlmm build) or YAML recipe")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    model = parser.add_argument_group("model")
    model.add_argument("--model", help="ML potential (see `mlmm models`); 'none' (default): pure MM")
    model.add_argument("--embedding", choices=EMBEDDINGS, help="default: mechanical")
    model.add_argument("--region", help="ML region: region name, 'resname XYZ' or MDTraj selection (default: ligand)")
    model.add_argument("--model-option", action="append", metavar="KEY=VALUE", dest="model_options",
                       help="option passed to the model plugin (value parsed as JSON when possible); repeatable")
    model.add_argument("--link-atoms", action="store_true", default=None,
                       help="cap covalent bonds the region cuts with link hydrogens (e.g. a protein side chain)")
    model.add_argument("--mm-region", choices=("pairs", "box"),
                       help="region's own MM nonbonded energy: its atom pairs (default) or exact with its periodic images")
    dynamics = parser.add_argument_group("dynamics")
    dynamics.add_argument("-k", "--mts", type=int, dest="mts_factor", help=f"MTS factor k: ML every k inner steps (default {DEFAULT_MTS_FACTOR})")
    dynamics.add_argument("--timestep", dest="inner_timestep", help=f"inner time step, e.g. 1fs (default {DEFAULT_INNER_TIMESTEP_FS:g}fs)")
    dynamics.add_argument("--temperature", type=float, help="K (default 300)")
    dynamics.add_argument("--friction", type=float, help="Langevin friction, 1/ps (default 1)")
    dynamics.add_argument("--pressure", type=float, help="bar: Monte Carlo barostat (default: none, constant volume)")
    dynamics.add_argument("--ensemble", choices=("nvt", "nve"), help="nvt: Langevin (default); nve: velocity Verlet")
    length = dynamics.add_mutually_exclusive_group()
    length.add_argument("--length", help="production length, e.g. 2ps or 10ns")
    length.add_argument("--steps", type=int, help="production length in integrator (outer) steps")
    dynamics.add_argument("--seed", type=int, help="random seed (default: drawn and recorded in run.json)")
    prep = parser.add_argument_group("preparation")
    prep.add_argument("--no-minimize", action="store_false", dest="minimize", default=None, help="skip minimization")
    prep.add_argument("--minimize-iterations", type=int, dest="minimize_max_iterations",
                      help="most minimizer iterations (default 1000; 0: until converged)")
    prep.add_argument("--equilibration", help="dynamics before production, e.g. 1ps (default 1ps)")
    out = parser.add_argument_group("output")
    out.add_argument("--trajectory", help="trajectory file name in OUT, format by suffix: .dcd (default), .xtc, .h5; 'none'")
    out.add_argument("--trajectory-interval", type=int, help="steps between frames (default 250)")
    out.add_argument("--energy-interval", type=int, help="steps between energies.csv rows (default 50)")
    out.add_argument("--checkpoint-interval", type=int, help="steps between checkpoints (default 2500)")
    out.add_argument("--no-progress", action="store_false", dest="progress", help="no progress bar")
    hw = parser.add_argument_group("platform")
    hw.add_argument("--platform", help="Reference, CPU, CUDA or OpenCL (default: fastest available)")
    hw.add_argument("--precision", choices=("single", "mixed", "double"), help="CUDA/OpenCL precision")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    mode.add_argument("--resume", action="store_true", help="continue the run in OUT from its last checkpoint")
    parser.set_defaults(handler=handle, option_flags={action.dest: "/".join(action.option_strings)
                                                      for action in parser._actions if action.option_strings})


_CONFIG_OPTIONS = (
    "model", "embedding", "region", "model_options", "link_atoms", "mm_region", "mts_factor", "inner_timestep", "temperature", "friction",
    "pressure", "ensemble", "length", "steps", "seed", "minimize", "minimize_max_iterations", "equilibration",
    "trajectory", "trajectory_interval", "energy_interval", "checkpoint_interval", "platform", "precision",
)


def handle(args) -> int:
    from ..running import RunConfig, resume, run

    given = {name: getattr(args, name) for name in _CONFIG_OPTIONS if getattr(args, name) is not None}
    if args.resume:
        fixed = sorted(set(given) - set(RESUME_OPTIONS))
        if fixed or args.input is not None:
            names = ", ".join(["input"] * (args.input is not None) + [args.option_flags[n] for n in fixed])
            allowed = ", ".join(args.option_flags[n] for n in RESUME_OPTIONS)
            raise InputError(f"--resume continues the run as OUT/run.json describes it; {names} cannot be changed "
                             f"(only {allowed}). To run with other settings, start again with --overwrite.")
        result = resume(args.output, progress=args.progress, **given)
    else:
        if "model_options" in given:
            given["model_options"] = parse_model_options(given["model_options"])
        if given.get("trajectory", "").lower() == "none":
            given["trajectory"] = None
        config = RunConfig(output=args.output, input=args.input, **given)
        result = run(config, overwrite=args.overwrite, progress=args.progress)
    threads = ""
    if result.torch_threads is not None:  # an ML/MM run
        threads = f" ({result.torch_threads} PyTorch thread{'s' * (result.torch_threads > 1)})"
    session = result.steps - result.started_at_step
    speed = (f"{result.ns_per_day:.2f} ns/day for the {session} steps of this session" if session
             else "nothing left to run (a longer --length or --steps with --resume extends it)")
    print(f"mlmm run: {result.folder}: step {result.steps} (t = {result.time_ps:.3f} ps) on {result.platform}{threads}, "
          f"{speed}")
    return 0

