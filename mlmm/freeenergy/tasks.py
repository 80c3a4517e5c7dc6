"""Running the task graph: serially in this process or on Dask distributed.

A calculation is laid out as a graph of ``dask.delayed`` tasks (building a system,
sampling one lambda window, one direction of switching). The same graph runs

- ``scheduler="serial"``: Dask's synchronous scheduler, one task after another here;
- ``scheduler="local"``: a ``distributed.LocalCluster`` of ``workers`` processes with one
  thread each;
- ``scheduler="tcp://host:8786"`` (any scheduler address) or a ``distributed.Client``:
  an existing cluster, whose workers must have mlmm installed.

Every task receives its own seed from :func:`task_seed`, derived from the protocol seed
and the task's name (molecule, leg, window), never from the order tasks happen to run
in, so a distributed run gives the same numbers as a serial one.
"""

from __future__ import annotations

import os
import zlib

import numpy as np

from ..errors import InputError


def task_seed(base_seed: int, *labels) -> int:
    """A seed in [1, 2**30) fixed by ``base_seed`` and the task's labels (OpenMM treats 0 as random)."""
    key = zlib.crc32("/".join(str(label) for label in labels).encode())
    state = np.random.SeedSequence([int(base_seed) & 0xFFFFFFFF, key]).generate_state(1)[0]
    return int(state % (2**30 - 1)) + 1


def compute(tasks: list, scheduler="serial", workers: int | None = None, progress: bool = True,
            description: str = "tasks") -> list:
    """Compute a list of ``dask.delayed`` objects and return their results in order."""
    import dask

    if scheduler in (None, "serial", "synchronous"):
        if not progress:
            return list(dask.compute(*tasks, scheduler="synchronous"))
        from tqdm.dask import TqdmCallback

        with TqdmCallback(desc=description, unit="task"):
            return list(dask.compute(*tasks, scheduler="synchronous"))

    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        return _compute_on(scheduler, tasks, progress, description)
    if scheduler == "local":
        n_workers = workers or max(1, os.cpu_count() or 1)
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            return _compute_on(client, tasks, progress, description)
    if isinstance(scheduler, str) and "://" in scheduler:
        try:
            client = Client(scheduler, timeout=30)
        except OSError as exc:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        with client:
            return _compute_on(client, tasks, progress, description)
    raise InputError(
        f"scheduler {scheduler!r} is not understood; use 'serial', 'local' or a scheduler address such as tcp://host:8786."
    )


def _compute_on(client, tasks, progress, description):
    from distributed import as_completed
    from tqdm.auto import tqdm

    futures = client.compute(tasks)
    if progress:
        for _ in tqdm(as_completed(futures), total=len(futures), desc=description, unit="task"):
            pass
    return client.gather(futures)
