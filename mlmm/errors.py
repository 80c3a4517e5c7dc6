"""Exceptions raised by mlmm.

Every error a user can cause derives from :class:`MlmmError`. Its message names what was
wrong, with the offending value, and what to do instead; the command-line interface prints
it without a traceback.
"""


class MlmmError(Exception):
    """Base class of all errors that mlmm raises on purpose."""


class InputError(MlmmError, ValueError):
    """A user-supplied file, selection, option or value cannot be used as given."""


class ModelUnavailableError(MlmmError):
    """An ML potential cannot be created here (weights missing, package not installed)."""


class SimulationError(MlmmError):
    """A simulation failed on the way (NaN, exploding energy); the last good state is kept."""
