"""Thermodynamic states along a lambda path, as openmmtools composable states.

A window of a free-energy leg is one value of the system's global lambda parameters. They
are represented with openmmtools' :class:`~openmmtools.states.GlobalParameterState`
machinery, so one sampler applies any of them with ``state.apply_to_context(context)``:

- :class:`MLLambdaState` controls :data:`mlmm.embedding.LAMBDA_ML` (0 = MM, 1 = ML/MM);
- :class:`openmmtools.alchemy.AlchemicalState` controls ``lambda_electrostatics`` and
  ``lambda_sterics`` of a system made by ``AbsoluteAlchemicalFactory`` (1 = coupled).
"""

from __future__ import annotations

from openmmtools.alchemy import AlchemicalState
from openmmtools.states import GlobalParameterState

from ..embedding import LAMBDA_ML


class MLLambdaState(GlobalParameterState):
    """The ML/MM interpolation parameter :data:`~mlmm.embedding.LAMBDA_ML` as a composable state."""

    lambda_ml = GlobalParameterState.GlobalParameter(LAMBDA_ML, standard_value=1.0)

    @lambda_ml.validator
    def lambda_ml(self, instance, new_value):
        if new_value is not None and not 0.0 <= new_value <= 1.0:
            raise ValueError(f"{LAMBDA_ML} = {new_value} must lie in [0, 1].")
        return new_value


def endstate_states(lambdas) -> list[MLLambdaState]:
    """One :class:`MLLambdaState` per value of LAMBDA_ML."""
    return [MLLambdaState(lambda_ml=float(value)) for value in lambdas]


def decoupling_states(electrostatics_lambdas, sterics_lambdas) -> list[AlchemicalState]:
    """Electrostatics switched off at full sterics, then sterics switched off (soft-core).

    ``electrostatics_lambdas`` and ``sterics_lambdas`` both run from 1 (coupled) to 0; the
    fully coupled state comes first, the decoupled state last.
    """
    states = [AlchemicalState(lambda_electrostatics=float(e), lambda_sterics=1.0) for e in electrostatics_lambdas]
    states += [AlchemicalState(lambda_electrostatics=0.0, lambda_sterics=float(s)) for s in sterics_lambdas[1:]]
    return states


def describe_state(state) -> dict[str, float]:
    """The global parameters a state sets, by name (for reports and plots)."""
    values = {}
    for name in ("lambda_ml", "lambda_electrostatics", "lambda_sterics"):
        value = getattr(state, name, None)
        if value is not None:
            values[name] = float(value)
    return values
