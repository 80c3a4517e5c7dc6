"""Production runs: configuration, reporters, checkpoints and crash-safe continuation.

``run(RunConfig(...))`` starts a run in an output folder, ``resume(folder)`` continues a
killed or finished one; ``mlmm run`` is the command-line front end (mlmm.cli.run).
"""

from .checkpoint import checkpoint_step, load_checkpoint, write_checkpoint
from .config import RunConfig
from .energies import EnergyWriter, read_energies
from .runner import RunResult, plot_run, resume, run
from .trajectory import TrajectoryWriter, read_frame_count

__all__ = [
    "RunConfig", "RunResult", "run", "resume", "plot_run", "checkpoint_step", "load_checkpoint", "write_checkpoint",
    "EnergyWriter", "read_energies", "TrajectoryWriter", "read_frame_count",
]
