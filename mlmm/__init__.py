"""mlmm: ML/MM molecular dynamics for OpenMM.

TorchScript ML potentials attached as openmm-torch ``TorchForce`` objects that run on the
device OpenMM uses, mechanical, electrostatic and polarizable embedding with a lambda to interpolate
from MM, multiple-time-step splitting, production runs and free-energy workflows.

Units everywhere: nm, ps, kJ/mol, K, e (see :mod:`mlmm.units`).
"""

import os

__version__ = "0.1.0"

# PyTorch's OpenMP threads spin while they wait; sharing cores with OpenMM's threads that made
# one AIMNet2 call 10-20x slower on a busy 2-core machine. Passive waiting avoids it. A short
# spin before sleeping (GNU OpenMP's GOMP_SPINCOUNT; none under PASSIVE unless set) keeps a
# second PyTorch thread awake between the matrix products of one model call, which makes a
# second thread pay on idle cores (mlmm.threads picks the count by timing); it costs nothing
# with a single thread.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

# torch must be loaded before OpenMM: OpenMM loads its plugins when it is first imported, and
# the openmm-torch plugin (TorchForce kernels) links against libtorch, which is found only
# once torch is in the process. See mlmm.torch_plugin.
import torch  # noqa: E402,F401  (import order matters)

from .torch_plugin import ensure_torch_plugin, import_openmmtorch  # noqa: E402

ensure_torch_plugin()
import_openmmtorch()

from .errors import (  # noqa: E402
    InputError,
    MlmmError,
    MlmmWarning,
    ModelUnavailableError,
    SimulationError,
    StabilityWarning,
)
from .molecular_system import MolecularSystem  # noqa: E402

__all__ = ["InputError", "MlmmError", "MlmmWarning", "ModelUnavailableError", "SimulationError", "StabilityWarning",
           "MolecularSystem"]
