"""Exceptions that end a run with one clear line (see ``pipeline.cli``).

The base class and ``ModelError`` are defined in ``engines.errors`` (the lower layer may not
import this one); they are re-exported here so the runtime has one place to import from.
"""

from engines.errors import ModelError, SegstreamError

# One base for both layers: ``except PipelineError`` must also catch the engines' errors
# (a ModelError from a backend ends a run with its one-line message), so this is an alias,
# not a subclass.
PipelineError = SegstreamError

__all__ = ["ConfigError", "ModelError", "PipelineError", "SegstreamError", "SourceError", "StageError"]


class ConfigError(PipelineError):
    """A config file, key or value is wrong."""


class SourceError(PipelineError):
    """A source URI cannot be opened or read."""


class StageError(PipelineError):
    """A stage process failed; the message names the stage."""
