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
