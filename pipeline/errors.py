"""Exceptions that end a run with one clear line (see ``pipeline.cli``)."""


class PipelineError(Exception):
    """Base class: the message is shown to the user as-is, on one line."""


class ConfigError(PipelineError):
    """A config file, key or value is wrong."""


class SourceError(PipelineError):
    """A source URI cannot be opened or read."""


class ModelError(PipelineError):
    """Unknown model, unreadable weights, or a backend that cannot run here."""


class StageError(PipelineError):
    """A stage process failed; the message names the stage."""
