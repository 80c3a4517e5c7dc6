"""Pictures of a free-energy calculation (matplotlib, written as PNG files).

- :func:`plot_overlap`: the MBAR overlap matrix (neighbours below ~0.03 mean too few windows);
- :func:`plot_dudl`: <dU/dlambda> per window with standard errors (the TI integrand),
  for LAMBDA_ML legs; :func:`plot_profile` the MBAR free energy of every state otherwise;
- :func:`plot_convergence`: the estimate from growing fractions of the data, forward and
  reverse; the two should meet well before the full data set;
- :func:`plot_work`: forward and (negated) reverse switching work distributions; by
  Crooks' theorem they cross at dG;
- :func:`plot_hydration`: calculated against experimental dG_hyd.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..figures import new_figure, plain_y_numbers, save_figure
from ..units import KJ_PER_KCAL


def _figure(width=4.5, height=3.6):
    return new_figure(figsize=(width, height), constrained_layout=True)


def plot_overlap(mbar, path, title: str = "") -> Path:
    fig, ax = _figure()
    overlap = np.asarray(mbar.overlap)
    image = ax.imshow(overlap, cmap="Blues", vmin=0.0, vmax=max(overlap.max(), 1e-12))
    if len(overlap) <= 16:
        for (i, j), value in np.ndenumerate(overlap):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if value > 0.5 * overlap.max() else "black")
    ticks = np.arange(len(overlap))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel("state")
    ax.set_ylabel("state")
    ax.set_title(f"{title or 'MBAR overlap'} (min neighbour {mbar.min_neighbour_overlap:.3f})", fontsize=9)
    fig.colorbar(image, ax=ax)
    return save_figure(fig, path, dpi=110)


def plot_dudl(mbar, path, title: str = "") -> Path:
    lambdas = [label["lambda_ml"] for label in mbar.state_labels]
    fig, ax = _figure()
    ax.errorbar(lambdas, mbar.dudl_mean, yerr=mbar.dudl_error, marker="o", capsize=3)
    ax.set_xlabel("lambda_ml (0 = MM, 1 = ML/MM)")
    ax.set_ylabel("<dU/dlambda> (kJ/mol)")
    plain_y_numbers(ax)
    ax.set_title(title or f"TI {mbar.ti_dG:.1f}, MBAR {mbar.dG:.1f} ± {mbar.dG_error:.1f} kJ/mol", fontsize=9)
    return save_figure(fig, path, dpi=110)


def plot_profile(mbar, path, title: str = "") -> Path:
    fig, ax = _figure()
    ax.errorbar(np.arange(len(mbar.state_dG)), mbar.state_dG, yerr=mbar.state_dG_error, marker="o", capsize=3)
    ax.set_xlabel("state")
    ax.set_ylabel("G(state) - G(state 0) (kJ/mol)")
    ax.set_title(title or f"MBAR {mbar.dG:.2f} ± {mbar.dG_error:.2f} kJ/mol", fontsize=9)
    return save_figure(fig, path, dpi=110)


def plot_convergence(mbar, path, title: str = "") -> Path:
    conv = mbar.convergence
    fig, ax = _figure()
    for direction, colour in (("forward", "tab:blue"), ("reverse", "tab:orange")):
        values, errors = np.asarray(conv[direction]), np.asarray(conv[f"{direction}_error"])
        ax.plot(conv["fractions"], values, marker="o", color=colour, label=direction)
        ax.fill_between(conv["fractions"], values - errors, values + errors, color=colour, alpha=0.25)
    ax.set_xlabel("fraction of decorrelated samples")
    ax.set_ylabel("dG (kJ/mol)")
    plain_y_numbers(ax)
    ax.legend(fontsize=8)
    ax.set_title(title or ("converged" if mbar.converged else "not converged"), fontsize=9)
    return save_figure(fig, path, dpi=110)


def plot_work(neq, path, title: str = "") -> Path:
    from matplotlib.ticker import MaxNLocator

    fig, ax = _figure()
    forward, reverse = np.asarray(neq.forward_work), -np.asarray(neq.reverse_work)
    shift = float(np.median(np.concatenate([forward, reverse])))  # ML and MM zeros differ: show work about the median
    bins = np.histogram_bin_edges(np.concatenate([forward, reverse]) - shift, bins=20)
    ax.hist(forward - shift, bins=bins, alpha=0.6, label="forward W")
    ax.hist(reverse - shift, bins=bins, alpha=0.6, label="-(reverse W)")
    if neq.bar is not None:
        ax.axvline(neq.bar["value"] - shift, color="black", linestyle="--", label="BAR dG")
    ax.set_xlabel(f"work - median work ({shift:.1f}), kJ/mol")
    ax.set_ylabel("switches")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    ax.set_title(title or "non-equilibrium switching", fontsize=9)
    return save_figure(fig, path, dpi=110)


def plot_leg(leg_result, folder, prefix: str = "") -> list[Path]:
    """Every plot that applies to one :class:`~mlmm.freeenergy.workflow.LegResult`."""
    folder = Path(folder)
    stem = f"{prefix}{leg_result.name}"
    mbar = leg_result.mbar
    paths = [plot_overlap(mbar, folder / f"{stem}-overlap.png", stem),
             plot_convergence(mbar, folder / f"{stem}-convergence.png", f"{stem}: convergence")]
    if mbar.dudl_mean is not None:
        paths.append(plot_dudl(mbar, folder / f"{stem}-dudl.png"))
    else:
        paths.append(plot_profile(mbar, folder / f"{stem}-profile.png"))
    if leg_result.neq is not None:
        paths.append(plot_work(leg_result.neq, folder / f"{stem}-work.png"))
    return paths


def plot_hydration(report, path) -> Path:
    """Calculated (MM, ML/MM per embedding, FreeSolv's GAFF) against experimental dG_hyd, kcal/mol.

    Molecules without an experimental value are left out.
    """
    measured = [r for r in report.results if r.molecule.experimental is not None]
    fig, ax = _figure(4.8, 4.4)
    expt = np.array([r.molecule.experimental for r in measured]) / KJ_PER_KCAL
    series = [("MM (this work)", [r.dG_mm for r in measured])]
    series += [(f"ML/MM {e}", [r.dG_mlmm[e] for r in measured]) for e in report.embeddings]
    for label, values in series:
        ax.errorbar(expt, [v["value"] / KJ_PER_KCAL for v in values], yerr=[v["error"] / KJ_PER_KCAL for v in values],
                    marker="o", linestyle="none", capsize=2, label=label)
    gaff = [(r.molecule.experimental, r.molecule.gaff) for r in measured if r.molecule.gaff is not None]
    if gaff:
        g = np.array(gaff) / KJ_PER_KCAL
        ax.plot(g[:, 0], g[:, 1], marker="x", linestyle="none", color="grey", label="GAFF (FreeSolv)")
    if len(expt):
        low, high = min(expt.min(), ax.get_ylim()[0]) - 0.5, max(expt.max(), ax.get_ylim()[1]) + 0.5
        ax.plot([low, high], [low, high], color="black", linewidth=0.8)
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
    ax.set_xlabel("experimental dG_hyd (kcal/mol)")
    ax.set_ylabel("calculated dG_hyd (kcal/mol)")
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=110)
