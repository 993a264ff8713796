"""Typed exceptions. The CLI prints their message as one line and exits with code 2."""

from __future__ import annotations


class CodesignError(Exception):
    """Base class of every error caused by the user's input or environment."""

    exit_code = 2


class FixedTypeError(CodesignError, ValueError):
    """An invalid fixed-point type or value."""


class LayerError(CodesignError, ValueError):
    """A layer whose attributes cannot be valid."""


class UnsupportedLayerError(CodesignError):
    """A model contains a layer (or quantizer) with no equivalent in the IR."""


class ModelFileError(CodesignError):
    """A model file that is missing, corrupt, not a model, or not trusted."""


class ArtifactError(CodesignError):
    """An artifact directory that is missing, corrupt, from a newer version, or incomplete."""


class BoardError(CodesignError):
    """An unknown board or a malformed board file."""


class DataError(CodesignError):
    """A data set whose shape, labels or values do not fit the model."""


class BudgetError(CodesignError):
    """A malformed or infeasible resource budget."""


class ConfigError(CodesignError, ValueError):
    """An option given to a step is not one it knows (a pruning method, a mapping, ...)."""


class BackendError(CodesignError):
    """A backend that does not fit the board, or a failed code generation."""


class ToolNotFoundError(CodesignError):
    """An external tool (Verilator, Yosys, a compiler) that is missing or too old."""


class ToolFailedError(CodesignError):
    """An external tool that ran and failed; the message carries its first relevant line."""


class VerificationError(CodesignError):
    """A bit-exactness check that failed: an implementation differs from the reference."""

    exit_code = 1


class JobsFailedError(CodesignError):
    """Independent jobs (sweep points) that failed after their retry; the others finished and
    their results were written, with each failure's error beside them."""

    exit_code = 1
