"""Every error i2v raises on purpose derives from :class:`I2VError`.

Messages are written for people: what was expected, what was found, and what to do about it.
The CLI prints an ``I2VError`` as one line (no traceback); anything else is a bug and keeps its traceback.
"""


class I2VError(Exception):
    """Base class of all deliberate i2v errors."""


class ConfigError(I2VError, ValueError):
    """A name, option or setting is not valid (unknown sampler, steps < 1, ...)."""


class InputError(I2VError, ValueError):
    """An input file or tensor is not what was expected (wrong size, unreadable image, ...)."""


class CheckpointError(I2VError):
    """A checkpoint file cannot be read, is of another model, or has missing/misshaped tensors."""


class NumericalError(I2VError, FloatingPointError):
    """NaN or inf appeared in a computation (often fp16 overflow)."""


class OutputExistsError(I2VError, FileExistsError):
    """The output path exists and overwriting was not asked for."""
