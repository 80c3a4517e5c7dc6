"""Checks of command-line values that must fail before any time is spent."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError


def check_plot_suffix(path, option: str = "--plot") -> None:
    """Refuse an image format matplotlib cannot write (``path`` None: nothing to check)."""
    if path is None:
        return
    from matplotlib.figure import Figure

    supported = Figure().canvas.get_supported_filetypes()
    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in supported:
        raise InputError(f"{option} {path}: unknown image format {suffix!r}; use one of {', '.join(sorted(supported))}.")
