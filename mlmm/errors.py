"""Exceptions raised by mlmm.

Every error a user can cause derives from :class:`MlmmError`. Its message names what was
wrong, with the offending value, and what to do instead; the command-line interface prints
it without a traceback. A :class:`MlmmWarning` lets the work go on but says which choice lies
outside what mlmm has validated; the command line prints it as one line as well.
"""


class MlmmError(Exception):
    """Base class of all errors that mlmm raises on purpose."""


class InputError(MlmmError, ValueError):
    """A user-supplied file, selection, option or value cannot be used as given."""


class ModelUnavailableError(MlmmError):
    """An ML potential cannot be created here (weights missing, package not installed)."""


class SimulationError(MlmmError):
    """A simulation failed on the way (NaN, exploding energy); the last good state is kept."""


class MlmmWarning(UserWarning):
    """Base class of the warnings mlmm issues: the work goes on, but a choice is risky."""


class StabilityWarning(MlmmWarning):
    """A simulation setting lies beyond what the stability study found stable (README, *Multiple time steps*)."""
