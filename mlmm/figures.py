"""Matplotlib figures written the way every mlmm file is: atomically, without a display.

:func:`new_figure` selects the non-interactive Agg backend unless one was chosen already;
:func:`save_figure` renders into memory and writes the file atomically (a crash leaves the
old file or none, never half an image), in the format named by the suffix (png, pdf,
svg, ...), then closes the figure.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from .atomic_io import write_bytes_atomic


def new_figure(rows: int = 1, columns: int = 1, **kwargs):
    """``matplotlib.pyplot.subplots(rows, columns, **kwargs)`` on the Agg backend unless one is set."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(rows, columns, **kwargs)


def plain_y_numbers(axis) -> None:
    """Label the y ticks of ``axis`` with the numbers themselves, without matplotlib's offset or
    scientific notation: ML/MM energies are near -1e6 kJ/mol and vary by a few kJ/mol, which would
    otherwise read as ticks of 10-50 under an offset of ``-1.104e6``."""
    axis.ticklabel_format(axis="y", useOffset=False, style="plain")


def log_y_with_plain_numbers(axis) -> None:
    """A logarithmic y axis of ``axis`` ticked at 1, 2 and 5 times each power of ten and labelled
    as plain numbers (10, 20, 50, 100, ... rather than 2 x 10^1), minor ticks unlabelled."""
    from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter

    axis.set_yscale("log")
    axis.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axis.yaxis.set_minor_formatter(NullFormatter())


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` atomically (parent folders created) and close it; return the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", dpi=dpi)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
    return path
