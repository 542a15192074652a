"""Exceptions that say what went wrong and what to do about it.

Every error raised on purpose by icl_lens derives from :class:`IclLensError`. Each class
has a docs page (``docs/errors.md``) with the symptom, the cause and the fix.
"""

from __future__ import annotations


class IclLensError(Exception):
    """Base class of every error icl_lens raises on purpose."""


class ModelNotAvailableError(IclLensError):
    """A model was asked for that cannot be loaded on this machine (missing package,
    unknown name, or a hub model without network access)."""


class TaskError(IclLensError, ValueError):
    """A task name is unknown or a task file is malformed."""


class PromptError(IclLensError, ValueError):
    """Prompts cannot be built as asked (too few pairs for the shots, bad template...)."""


class ConfigError(IclLensError, ValueError):
    """A configuration value is out of range or inconsistent with the model."""


class ResultFileError(IclLensError, ValueError):
    """A saved result is missing, incomplete or of another type than the one asked for."""


class ModelContractError(IclLensError, TypeError):
    """The object passed as a model does not speak the TransformerLens hook contract."""


class VectorMismatchError(ConfigError):
    """A vector was applied to a model (or a weight-processing mode) it was not read from."""


class FastPathMismatchError(ModelContractError):
    """The fast patching engine did not reproduce the model's own forward pass.

    Its control row (an unpatched copy of the answer position, recomputed by the engine)
    differs from the real forward by more than the tolerance: the model runs something the
    engine cannot see. ``method="fast"`` raises this; ``method="auto"`` warns and computes
    that chunk of prompts on the plain path instead. ``difference`` is the largest
    log-probability difference the control row showed.
    """

    def __init__(self, message: str, difference: float = float("nan")) -> None:
        super().__init__(message)
        self.difference = difference
