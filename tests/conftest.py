"""Shared test fixtures: real systems built once per test session.

Each system is built from its recipe in ``systems/`` (or directly, for vacuum), saved with
``MolecularSystem.save`` into a session temporary folder and reloaded with
``MolecularSystem.load``, so every test sees what a user would after ``mlmm build``.

The session-scoped systems are shared by all tests: treat them as read-only. A test that
edits the OpenMM System (embedding, barostats, ...) should take a private copy with
``MolecularSystem.load(<name>_dir)`` or ``copy.deepcopy(system.system)``.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest

import mlmm  # noqa: F401  (first: loads torch before openmm, see mlmm.torch_plugin)

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = REPO / "systems"

os.environ.setdefault("OMP_NUM_THREADS", "1")
# OpenFF and openmmforcefields warn about unrelated optional toolkits on import.
warnings.filterwarnings("ignore", message=".*OpenEye.*")
warnings.filterwarnings("ignore", message=".*AmberTools.*")


def _build_saved(tmp_path_factory, name: str, build) -> Path:
    """Build a system with ``build()``, save it once per test run and return the folder.

    Under pytest-xdist the workers share one folder (the parent of their temporary folders),
    so the first worker that needs a system builds it while the others wait on a file lock.
    """
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / "systems" / name
    with FileLock(str(root / f"{name}.lock")):
        if not folder.exists():
            staging = root / "systems" / f".{name}.partial"
            shutil.rmtree(staging, ignore_errors=True)  # left by a worker whose build failed
            build().save(staging)
            staging.rename(folder)
    return folder


@pytest.fixture(scope="session")
def toluene_water_dir(tmp_path_factory) -> Path:
    """Saved folder of toluene in TIP3P water (1.0 nm padding, 0.15 M NaCl, PME 0.9 nm, HBonds)."""
    from mlmm.building import build_from_recipe

    return _build_saved(tmp_path_factory, "toluene_water",
                        lambda: build_from_recipe(SYSTEMS / "toluene-water.yaml", progress=False))


@pytest.fixture(scope="session")
def toluene_water(toluene_water_dir):
    """Toluene in a small TIP3P box (~730 atoms), regions ligand/solvent/ions; read-only."""
    from mlmm import MolecularSystem

    return MolecularSystem.load(toluene_water_dir)


@pytest.fixture(scope="session")
def toluene_vacuum_dir(tmp_path_factory) -> Path:
    """Saved folder of toluene alone in vacuum (NoCutoff, HBonds)."""
    from openff.toolkit.utils import get_data_file_path

    from mlmm.building import Ligand, build_system

    toluene = Ligand(get_data_file_path("molecules/toluene.sdf"), resname="LIG", name="toluene")
    return _build_saved(tmp_path_factory, "toluene_vacuum",
                        lambda: build_system([toluene], solvent=False, progress=False))


@pytest.fixture(scope="session")
def toluene_vacuum(toluene_vacuum_dir):
    """Toluene alone, no box, NoCutoff (15 atoms, region ligand); read-only."""
    from mlmm import MolecularSystem

    return MolecularSystem.load(toluene_vacuum_dir)


@pytest.fixture(scope="session")
def t4l_toluene_dir(tmp_path_factory) -> Path:
    """Saved folder of the systems/t4l-toluene.yaml recipe."""
    from mlmm.building import build_from_recipe

    return _build_saved(tmp_path_factory, "t4l_toluene",
                        lambda: build_from_recipe(SYSTEMS / "t4l-toluene.yaml", progress=False))


@pytest.fixture(scope="session")
def t4l_toluene(t4l_toluene_dir):
    """T4 lysozyme L99A with toluene in its cavity, TIP3P, 0.15 M NaCl (~31,800 atoms); read-only."""
    from mlmm import MolecularSystem

    return MolecularSystem.load(t4l_toluene_dir)


@pytest.fixture(scope="session")
def toluene():
    """Toluene from the OpenFF toolkit's data: (atomic numbers, conformer (15, 3) in nm)."""
    from openff.toolkit import Molecule
    from openff.toolkit.utils import get_data_file_path

    molecule = Molecule.from_file(get_data_file_path("molecules/toluene.sdf"))
    return [atom.atomic_number for atom in molecule.atoms], molecule.conformers[0].m_as("nanometer")
