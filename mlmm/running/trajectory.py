"""Trajectory files written through MDTraj (DCD, XTC or HDF5, chosen by the file suffix).

A run writes one frame every ``trajectory_interval`` steps. To continue a killed run the
file must hold exactly the frames up to the last checkpoint: :class:`TrajectoryWriter`
with ``keep_frames=n`` copies the first ``n`` frames of the existing file into a fresh
file (written beside it and renamed over it, so a crash during the copy loses nothing) and
appends the new frames to it. :meth:`flush`, called before every checkpoint, empties the
writer's buffers (MDTraj's DCD writer has none) and syncs the file to disk.

Units in the files follow each format: DCD in Angstrom, XTC and HDF5 in nm; XTC and HDF5
also store the time (ps) of every frame, XTC the step number.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import mdtraj
import mdtraj.formats as formats
import numpy as np
from mdtraj.utils import box_vectors_to_lengths_and_angles

from ..errors import InputError

_COPY_CHUNK = 1000  # frames held in memory while a trajectory is truncated


class TrajectoryWriter:
    """Append frames (positions in nm, box vectors in nm, time in ps, step) to a trajectory file."""

    def __init__(self, path: str | os.PathLike, topology, keep_frames: int | None = None):
        """Open ``path`` for writing; ``topology`` is an OpenMM or MDTraj topology.

        ``keep_frames=None`` or ``0`` starts a new file; ``keep_frames=n`` keeps the first ``n``
        frames of the existing file and appends after them.
        """
        self.path = Path(path)
        self._format = _format_for(self.path)
        if not isinstance(topology, mdtraj.Topology):
            topology = mdtraj.Topology.from_openmm(topology)
        self._topology = topology
        if not keep_frames:  # a new file, or one continued from a checkpoint taken before its first frame
            self._handle = self._format.open(self.path, topology)
            return
        if not self.path.is_file():
            raise InputError(f"trajectory {self.path} is missing, but the checkpoint expects {keep_frames} frames in it.")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=self.path.suffix, dir=self.path.parent)
        os.close(fd)
        try:
            self._handle = self._format.open(Path(tmp), topology)
            copied = _copy_frames(self._format, self.path, self._handle, keep_frames)
            if copied < keep_frames:
                raise InputError(
                    f"trajectory {self.path} holds {copied} complete frames, but the checkpoint expects "
                    f"{keep_frames}; the file was damaged outside the run. Start again with --overwrite."
                )
            self._format.flush(self._handle)
            _fsync_path(tmp)
            os.replace(tmp, self.path)  # the open handle follows the file to its new name
        except BaseException:
            self._close_quietly()
            Path(tmp).unlink(missing_ok=True)
            raise

    def write(self, positions_nm: np.ndarray, box_vectors_nm: np.ndarray | None, time_ps: float, step: int) -> None:
        """Append one frame."""
        self._format.write(self._handle, np.asarray(positions_nm, dtype=np.float32)[None], box_vectors_nm,
                           time_ps, step)

    def flush(self) -> None:
        """Put every written frame on disk (called before each checkpoint).

        MDTraj's DCD writer creates its file at the first frame: before that there is nothing to sync.
        """
        self._format.flush(self._handle)
        if self.path.exists():
            _fsync_path(self.path)

    def close(self) -> None:
        self._handle.close()

    def _close_quietly(self):
        handle = getattr(self, "_handle", None)
        if handle is not None:
            try:
                handle.close()
            except Exception:  # the handle may be half-open after a failed copy
                pass


def read_frame_count(path: str | os.PathLike) -> int:
    """Number of complete frames in a trajectory file."""
    path = Path(path)
    with _format_for(path).reader(path) as reader:
        return len(reader)


def _copy_frames(trajectory_format, source: Path, handle, n_frames: int) -> int:
    """Copy up to the first ``n_frames`` of ``source`` to ``handle`` in chunks; return how many were copied."""
    copied = 0
    with trajectory_format.reader(source) as reader:
        while copied < n_frames:
            chunk = trajectory_format.copy_chunk(reader, handle, min(_COPY_CHUNK, n_frames - copied))
            if chunk == 0:
                break
            copied += chunk
    return copied


def _fsync_path(path) -> None:
    """Sync a file's data to disk; fsync through any descriptor of a file syncs all of it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- formats
def _lengths_angles(box_vectors_nm, scale=1.0):
    if box_vectors_nm is None:
        return None, None
    a, b, c = np.asarray(box_vectors_nm, dtype=np.float64) * scale
    la, lb, lc, alpha, beta, gamma = box_vectors_to_lengths_and_angles(a, b, c)
    return np.array([[la, lb, lc]]), np.array([[alpha, beta, gamma]])


@contextlib.contextmanager
def _process_stdout_silenced():
    """Send what compiled code writes to the process's standard output (file descriptor 1) to
    the null device for the duration; Python's own ``sys.stdout`` is flushed first."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


class _DCD:
    """CHARMM/NAMD DCD: positions and cell in Angstrom and degrees; no times."""

    @staticmethod
    def open(path, topology):
        return formats.DCDTrajectoryFile(str(path), "w")

    @staticmethod
    def write(handle, xyz_nm, box_nm, time_ps, step):
        lengths, angles = _lengths_angles(box_nm, scale=10.0)
        handle.write(xyz_nm * 10.0, cell_lengths=lengths, cell_angles=angles)

    @staticmethod
    def flush(handle):
        """MDTraj's DCD writer hands every frame to the OS as it writes it."""

    @staticmethod
    def reader(path):
        with _process_stdout_silenced():  # VMD's dcdplugin prints the file's format on opening
            return formats.DCDTrajectoryFile(str(path), "r")

    @staticmethod
    def copy_chunk(reader, handle, n_frames):
        xyz, lengths, angles = reader.read(n_frames=n_frames)
        if len(xyz):
            handle.write(xyz, cell_lengths=lengths, cell_angles=angles)
        return len(xyz)


class _XTC:
    """GROMACS XTC: positions and box in nm, time in ps and step per frame (positions to 1e-3 nm)."""

    @staticmethod
    def open(path, topology):
        return formats.XTCTrajectoryFile(str(path), "w")

    @staticmethod
    def write(handle, xyz_nm, box_nm, time_ps, step):
        box = None if box_nm is None else np.asarray(box_nm, dtype=np.float32)[None]
        handle.write(xyz_nm, time=np.array([time_ps], dtype=np.float32), step=np.array([step], dtype=np.int32), box=box)

    @staticmethod
    def flush(handle):
        handle.flush()

    @staticmethod
    def reader(path):
        return formats.XTCTrajectoryFile(str(path), "r")

    @staticmethod
    def copy_chunk(reader, handle, n_frames):
        xyz, time, step, box = reader.read(n_frames=n_frames)
        if len(xyz):
            has_box = box is not None and np.any(box)
            handle.write(xyz, time=time, step=step, box=box if has_box else None)
        return len(xyz)


class _HDF5:
    """MDTraj HDF5: positions and cell in nm and degrees, time in ps, the topology included."""

    @staticmethod
    def open(path, topology):
        handle = formats.HDF5TrajectoryFile(str(path), "w")
        handle.topology = topology
        return handle

    @staticmethod
    def write(handle, xyz_nm, box_nm, time_ps, step):
        lengths, angles = _lengths_angles(box_nm)
        handle.write(xyz_nm, time=np.array([time_ps]), cell_lengths=lengths, cell_angles=angles)

    @staticmethod
    def flush(handle):
        handle.flush()

    @staticmethod
    def reader(path):
        return formats.HDF5TrajectoryFile(str(path), "r")

    @staticmethod
    def copy_chunk(reader, handle, n_frames):
        frames = reader.read(n_frames=n_frames)
        if frames.coordinates is None or len(frames.coordinates) == 0:
            return 0
        handle.write(frames.coordinates, time=frames.time, cell_lengths=frames.cell_lengths,
                     cell_angles=frames.cell_angles)
        return len(frames.coordinates)


_FORMATS = {".dcd": _DCD, ".xtc": _XTC, ".h5": _HDF5, ".hdf5": _HDF5}


def _format_for(path: Path):
    try:
        return _FORMATS[path.suffix.lower()]
    except KeyError:
        raise InputError(
            f"trajectory {path.name!r} has an unknown format; use a name ending in {', '.join(_FORMATS)}."
        ) from None
