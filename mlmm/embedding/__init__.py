"""Embedding an ML region in an MM system (mechanical or electrostatic), with a lambda.

The total potential is ``U(lambda) = U_MM(all) + lambda * [E_ML(region) + E_coupling - E_MM(region)]``:
the complete MM force field stays in the MM force groups (its PME mesh in a slow group of its
own) and the bracket, the ML correction, sits in the slow group (see :mod:`mlmm.forcegroups`). ``lambda = 0`` is pure MM,
``lambda = 1`` is ML/MM; OpenMM reports dU/dlambda through the global parameter
:data:`LAMBDA_ML`.
"""

#: name of the global parameter that interpolates MM (0) to ML/MM (1)
LAMBDA_ML = "lambda_ml"

from .mixed import EMBEDDINGS, MixedSystem, MLPotential, create_mixed_system  # noqa: E402

__all__ = ["EMBEDDINGS", "LAMBDA_ML", "MixedSystem", "MLPotential", "create_mixed_system"]
