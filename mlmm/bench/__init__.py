"""Benchmarks: how fast ML/MM runs against pure MM and against the host-copy path of openmm-ml.

``mlmm bench`` (:mod:`mlmm.cli.bench`) and :func:`run_benchmarks` time, on each system,
MM alone, ML/MM with the TorchForce every step, ML/MM with multiple time steps, ML/MM with
an ``openmm.PythonForce`` copying positions to the host each step, and the bare model call;
they report ms per step, ns/day, the ratios between rows from the same run, the cost of
each part of the ML/MM force field and the agreement of the two ML paths
(:mod:`mlmm.bench.harness`). :mod:`mlmm.bench.report` writes the JSON, the Markdown table
and the plot.
"""

from .harness import (DEFAULT_MTS_FACTOR, DEFAULT_SYSTEMS, ROWS, BenchmarkSettings, SystemBenchmark,
                      benchmark_system, compare_forces, ns_per_day, resolve_system)
from .host_copy import HostCopyRegionPotential, create_host_copy_force, create_host_copy_system
from .report import markdown_table, plot, write_json
from .suite import run_benchmarks

__all__ = [
    "DEFAULT_MTS_FACTOR", "DEFAULT_SYSTEMS", "ROWS", "BenchmarkSettings", "SystemBenchmark", "benchmark_system",
    "compare_forces", "ns_per_day", "resolve_system", "HostCopyRegionPotential", "create_host_copy_force",
    "create_host_copy_system", "markdown_table", "plot", "write_json", "run_benchmarks",
]
