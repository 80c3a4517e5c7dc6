"""Command-line values shared by subcommands: checks that fail before any time is spent, parsers."""

from __future__ import annotations

import json
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


def parse_model_options(items: list[str] | None) -> dict:
    """``["KEY=VALUE", ...]`` from ``--model-option`` to a dict; values are JSON when they parse, else strings."""
    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--model-option {item!r} is not KEY=VALUE, e.g. --model-option members=4.")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options
