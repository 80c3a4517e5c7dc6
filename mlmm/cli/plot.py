"""``mlmm plot``: draw a run's energies again, from its energies CSV as it stands.

    mlmm plot runs/tw            # runs/tw/energies.png: temperature, energies, volume against time

``mlmm run`` draws ``OUT/energies.png`` when production ends or stops; this draws it at any
time, for a run still going or one that was killed (see mlmm.running.energy_plot).
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plot", help="draw OUT/energies.png of a run (in progress, killed or finished) from its energies CSV",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("output", help="output folder of `mlmm run`")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from ..running import plot_run

    path = plot_run(args.output)
    print(f"mlmm plot: {path}" if path is not None else
          f"mlmm plot: {args.output} has fewer than two rows of energies yet; nothing drawn")
    return 0
