"""The benchmark report: machine description, JSON file, Markdown table and plot.

The JSON document is::

    {"machine": {...}, "settings": {...},
     "systems": {NAME: {"rows": {ROW: {"ms_per_step": x, "ns_per_day": y, ...}},
                        "ratios": {"mts_vs_mm": ..., "torchforce_vs_pythonforce": ...,
                                   "bridge_overhead_fraction": ..., ...},
                        "breakdown_ms_per_evaluation": {...}, "consistency": {...}, ...}}}

(see :mod:`mlmm.bench.harness` for what each row and ratio means).
"""

from __future__ import annotations

import json
import os
import platform as host_platform
import textwrap
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ..atomic_io import write_text_atomic
from ..figures import log_y_with_plain_numbers, new_figure, save_figure
from .harness import ROWS

ROW_LABELS = {
    "mm": "MM only",
    "torchforce": "ML/MM, TorchForce every step",
    "mts": "ML/MM, TorchForce, MTS",
    "pythonforce": "ML/MM, PythonForce (host copy) every step",
    "model": "bare model call (energy + forces)",
}


def machine_info(platform_name: str, threads: int | None, torch_threads: int | str | None) -> dict:
    """The hardware, load and software versions that the timings depend on."""
    import openmm
    import torch

    info = {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1_5_15_min": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "os": f"{host_platform.system()} {host_platform.release()}",
        "python": host_platform.python_version(),
        "openmm": openmm.__version__,
        "torch": torch.__version__,
        "platform": platform_name,
        "openmm_cpu_threads": threads if threads is not None else _default_openmm_threads(),
        "torch_threads": torch_threads if torch_threads is not None else torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    try:
        info["openmmtorch"] = version("openmmtorch")
    except PackageNotFoundError:
        info["openmmtorch"] = None
    if platform_name == "CUDA" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return host_platform.processor() or "unknown"


def _default_openmm_threads() -> int:
    import openmm

    return int(openmm.Platform.getPlatformByName("CPU").getPropertyDefaultValue("Threads"))


def write_json(report: dict, path: str | os.PathLike) -> None:
    """Write the report to ``path`` atomically (indented JSON)."""
    write_text_atomic(path, json.dumps(report, indent=1) + "\n")


def markdown_table(report: dict) -> str:
    """Markdown tables: wall and CPU ms per inner step and ns/day of each row; the ratios; per system."""
    lines = ["| system | row | ms/step | CPU ms/step | ns/day |", "| --- | --- | ---: | ---: | ---: |"]
    for name, entry in report["systems"].items():
        for row in ROWS:
            if row not in entry["rows"]:
                continue
            values = entry["rows"][row]
            ms = f"{values['ms_per_step']:.2f}"
            if row == "mts":
                ms += f" ({values['ms_per_outer_step']:.1f} per {values['mts_factor']}-step outer step)"
            if row == "model":
                ms += " per call"
            lines.append(f"| {name} | {row} | {ms} | {values['cpu_ms_per_step']:.2f} | {values['ns_per_day']:.2f} |")
    lines += ["", "| system | ratios from | " + " | ".join(_RATIO_NAMES) + " |",
              "| --- | --- |" + " ---: |" * len(_RATIO_NAMES)]
    for name, entry in report["systems"].items():
        for source, ratios in (("wall time", entry["ratios"]), ("CPU time", entry["ratios_cpu"])):
            cells = [_format(ratios.get(key)) for key in _RATIO_NAMES]
            lines.append(f"| {name} | {source} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, entry in report["systems"].items():
        lines.append(f"{name}: {thread_summary(entry.get('torch_threads', {}))}")
    return "\n".join(lines)


def thread_summary(threads: dict) -> str:
    """One line on PyTorch's threads of a system's rows: the setting, the count used, each probe's timings."""
    text = f"PyTorch threads {threads.get('setting')}, {threads.get('used_at_end')} used"
    for probe in threads.get("probes", []):
        timings = ", ".join(f"{count}: {ms:.2f}" for count, ms in probe["ms_per_step"].items())
        text += f"; probe ms per integrator step {timings} -> {probe['chosen']}"
    return text


_RATIO_NAMES = ("mts_vs_mm", "torchforce_vs_mm", "torchforce_vs_pythonforce", "bridge_overhead_fraction",
                "torchforce_call_overhead_fraction", "mm_region_share_of_slow_group", "mm_region_share_of_mts_step")


def _format(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def plot(report: dict, path: str | os.PathLike) -> None:
    """Bar chart of ns/day per row, one panel per system, logarithmic axis; written atomically.

    The image format follows the suffix of ``path`` (png, pdf, svg, ...).
    """
    systems = report["systems"]
    fig, axes = new_figure(1, len(systems), figsize=(4.8 * len(systems), 4.2), squeeze=False)
    colours = {"mm": "#4c72b0", "torchforce": "#dd8452", "mts": "#55a868", "pythonforce": "#c44e52",
               "model": "#8c8c8c"}
    for axis, (name, entry) in zip(axes[0], systems.items()):
        rows = [row for row in ROWS if row in entry["rows"]]
        values = [entry["rows"][row]["ns_per_day"] for row in rows]
        labels = [f"mts k={entry['rows'][row]['mts_factor']}" if row == "mts" else row for row in rows]
        bars = axis.bar(labels, values, color=[colours[row] for row in rows])
        if "model" in rows:
            bars[rows.index("model")].set_hatch("//")
        log_y_with_plain_numbers(axis)
        axis.set_ylim(min(values) / 1.5, max(values) * 1.6)
        ratio = entry["ratios"].get("mts_vs_mm")
        axis.set_title(f"{name} ({entry['n_atoms']} atoms)" + ("" if ratio is None else f", MTS / MM = {ratio:.2g}"),
                       fontsize=10)
        axis.set_ylabel("ns/day")
        axis.tick_params(axis="x", rotation=30)
        for bar, value in zip(bars, values):
            label = f"{value:.0f}" if value >= 100 else f"{value:.3g}"
            axis.annotate(label, (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom", fontsize=8)
    machine = report["machine"]
    settings = report["settings"]
    model = settings["model"] + "".join(f", {key}={value}" for key, value in settings.get("model_options", {}).items()
                                        if key != "weights")
    embedding = settings.get("embedding", "mechanical")
    title = (f"{machine['platform']}, {machine['usable_cores']} cores, {model}, {embedding} embedding; "
             f"model row: one call per {settings['inner_timestep'] * 1000:g} fs step")
    fig.suptitle(textwrap.fill(title, width=75 * len(systems)), fontsize=9)  # about 75 characters fit per panel
    fig.tight_layout()
    save_figure(fig, path)
