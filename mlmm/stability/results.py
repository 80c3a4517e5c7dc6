"""Results files of the stability study: reading, joining, the Markdown table and the figure.

A results file is the JSON object :func:`mlmm.stability.run_study` writes: configuration key
(:attr:`mlmm.stability.StudyConfig.key`) -> row of metrics, each row carrying the lengths it
was run with (``equilibration_ps``, ``nvt_ps``, ``nve_ps``, in ps). A file holds rows of one
set of lengths, so that its table compares like with like: running into it with other lengths,
or merging files of other lengths, is refused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import InputError
from ..figures import log_y_with_plain_numbers, new_figure, save_figure

#: the lengths (ps) a row was run with; rows of one configuration are comparable only if all agree
LENGTH_KEYS = ("equilibration_ps", "nvt_ps", "nve_ps")


def load_results(path: str | Path) -> dict:
    """The rows of a results file written by :func:`mlmm.stability.run_study`, by configuration key."""
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such stability results file.") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not a stability results file (invalid JSON: {exc}).") from None
    if not isinstance(results, dict) or not all(isinstance(r, dict) and "stable" in r for r in results.values()):
        raise InputError(f"{path} is not a stability results file: expected the JSON object that "
                         "`mlmm stability --json` writes, configuration key -> row.")
    return results


def lengths_of(row: dict) -> dict:
    """The run lengths (ps) recorded in a row (or a saved progress), None where missing."""
    return {key: row.get(key) for key in LENGTH_KEYS}


def same_lengths(a: dict, b: dict) -> bool:
    """Whether two sets of run lengths (ps) agree."""
    return all(a[key] is not None and b[key] is not None and math.isclose(a[key], b[key]) for key in LENGTH_KEYS)


def shown_lengths(lengths: dict) -> str:
    """Run lengths for a message: ``equilibration_ps 1.0, nvt_ps 100.0, nve_ps 10.0``."""
    return ", ".join(f"{key} {lengths[key]}" for key in LENGTH_KEYS)


def check_resumable(key: str, row: dict, lengths: dict, path: Path) -> None:
    """Refuse to take a finished row that was run with other equilibration, NVT or NVE lengths (ps)."""
    if not same_lengths(lengths_of(row), lengths):
        raise InputError(
            f"{path} already holds {key} run with {shown_lengths(lengths_of(row))}, but this study asks for "
            f"{shown_lengths(lengths)}. Give another --json file, or the same lengths, so that rows of "
            "different lengths are not mixed.")


def merge_results(paths: list[str | Path]) -> dict:
    """Join results files, in order; every row must have the same lengths, so that one table
    compares like with like.

    Rows of one configuration repeat one measurement; the later file's row is kept.
    """
    merged, origin = {}, {}
    for path in paths:
        for key, row in load_results(path).items():
            first = next(iter(merged), None)
            if first is not None and not same_lengths(lengths_of(row), lengths_of(merged[first])):
                raise InputError(
                    f"{first} is in {origin[first]} with {shown_lengths(lengths_of(merged[first]))} and {key} in "
                    f"{path} with {shown_lengths(lengths_of(row))}: merge only files of one set of run lengths.")
            merged[key], origin[key] = row, path
    return merged


def markdown_table(results: list[dict]) -> str:
    """The study as a Markdown table."""
    header = ("| system | embedding | HMR | inner (fs) | k | outer (fs) | stable | T (K) | max bond dev. (pm) "
              "| NVE drift (kJ/mol/ns/dof) | ns/day |\n|" + "---|" * 11)
    rows = [header]
    def shown(value, fmt):
        return "-" if value is None or not math.isfinite(value) else format(value, fmt)

    for r in results:
        stability = "yes" if r["stable"] else f"no ({r['failure']})"
        rows.append(
            f"| {r['system']} | {r['embedding']} | {'yes' if r['hmr'] else 'no'} | {r['inner_fs']:g} | {r['k']} "
            f"| {r['outer_fs']:g} | {stability} | {shown(r['temperature_k'], '.1f')} "
            f"| {shown(1e3 * r['max_bond_deviation_nm'], '.1f')} | {shown(r['nve_drift'], '.3g')} "
            f"| {shown(r['ns_per_day'] if r['stable'] else math.nan, '.2f')} |"
        )
    return "\n".join(rows) + "\n"


def plot(results: list[dict], path: str | Path) -> None:
    """Largest region bond deviation (pm) and NVE drift against the outer step (fs); written atomically.

    One column per system, all on one outer-step axis; one line per (embedding, inner step,
    HMR), in the same colour in every column (:func:`series_colors`). Unstable configurations
    are red crosses at the bond deviation reached before they failed (or above 20 pm when none
    was measured); the deviation axis is logarithmic. The image format follows the suffix of
    ``path`` (png, pdf, svg, ...).
    """
    systems = list(dict.fromkeys(r["system"] for r in results))
    colors = series_colors(results)
    fig, axes = new_figure(2, len(systems), figsize=(5.2 * len(systems), 6.4), squeeze=False, sharex=True)
    for column, system in enumerate(systems):
        bond_axis, drift_axis = axes[0, column], axes[1, column]
        rows = [r for r in results if r["system"] == system]
        measured = [1e3 * r["max_bond_deviation_nm"] for r in rows if math.isfinite(r["max_bond_deviation_nm"])]
        top = 1.15 * max(measured + [20.0])  # above any stable row (< 20 pm)
        for embedding, inner_fs, hmr in (s for s in colors if any(_series(r) == s for r in rows)):
            color = colors[(embedding, inner_fs, hmr)]
            points = sorted((r for r in rows if _series(r) == (embedding, inner_fs, hmr)), key=lambda r: r["outer_fs"])
            stable = [r for r in points if r["stable"]]
            label = f"{embedding}, {inner_fs:g} fs inner{', HMR' if hmr else ''}"
            bond_axis.plot([r["outer_fs"] for r in stable], [1e3 * r["max_bond_deviation_nm"] for r in stable],
                           "o-", color=color, label=label)
            drift_axis.plot([r["outer_fs"] for r in stable], [r["nve_drift"] for r in stable], "o-", color=color)
            failed = [r for r in points if not r["stable"]]
            bond_axis.plot([r["outer_fs"] for r in failed],
                           [1e3 * r["max_bond_deviation_nm"] if math.isfinite(r["max_bond_deviation_nm"]) else top
                            for r in failed], "x", color="#c44e52", markersize=9, markeredgewidth=2)
        log_y_with_plain_numbers(bond_axis)  # stable rows deviate by ~5-15 pm, failing ones by up to ~100s
        bond_axis.set_ylim(0.5 * min(measured + [8.0]), 1.5 * top)
        bond_axis.set_title(f"{system} (x: unstable)", fontsize=10)
        bond_axis.set_ylabel("largest bond deviation (pm)")
        bond_axis.legend(fontsize=7)
        drift_axis.axhline(0.0, color="#8c8c8c", linewidth=0.8)
        drift_axis.set_ylabel("NVE drift (kJ/mol/ns/dof)")
        drift_axis.set_xlabel("outer time step (fs)")
    fig.tight_layout()
    save_figure(fig, path)


def series_colors(results: list[dict]) -> dict[tuple[str, float, bool], str]:
    """A matplotlib colour for each (embedding, inner step in fs, HMR) series in ``results``.

    The order is fixed (without HMR first, then the longer inner step, then mechanical before
    the other embeddings), so that a series has the same colour in every system's panel and in
    every plot of the same set of series.
    """
    series = sorted(dict.fromkeys(_series(r) for r in results),
                    key=lambda s: (s[2], -s[1], s[0] != "mechanical", s[0]))
    return {s: f"C{index % 10}" for index, s in enumerate(series)}


def _series(row: dict) -> tuple[str, float, bool]:
    return row["embedding"], row["inner_fs"], row["hmr"]
