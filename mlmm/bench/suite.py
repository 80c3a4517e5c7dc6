"""Benchmark several systems in one run and assemble the report (see :mod:`mlmm.bench.report`)."""

from __future__ import annotations

from dataclasses import asdict

from .harness import BenchmarkSettings, benchmark_system, resolve_system, torch_threads
from .report import machine_info


def run_benchmarks(systems, settings: BenchmarkSettings | None = None, progress: bool = True) -> dict:
    """Benchmark each system of ``systems`` (names, recipe files or saved folders) and return the report.

    Systems are built or loaded one at a time, just before they are measured. A tqdm bar
    per system shows the timed blocks as they finish.
    """
    from tqdm.auto import tqdm

    settings = (settings or BenchmarkSettings()).validate()
    report = {"machine": None, "settings": asdict(settings), "systems": {}}
    with torch_threads(settings.torch_threads):
        report["machine"] = machine_info(settings.platform_name, settings.threads, settings.torch_threads)
        for spec in systems:
            name, molecular_system = resolve_system(spec, progress=progress)
            blocks = settings.repeats * len(settings.rows)
            with tqdm(total=blocks, desc=f"bench {name}", unit="block", disable=not progress,
                      dynamic_ncols=True) as bar:
                result = benchmark_system(molecular_system, settings, name, progress=bar)
            report["systems"][name] = result.to_dict()
    report["machine"]["load_average_at_end"] = _load_average()
    report["settings"]["rows"] = list(settings.rows)
    return report


def _load_average():
    import os

    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None
