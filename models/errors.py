"""One root exception for the whole project, with specific subclasses.

Foreign errors are wrapped (``raise ModelLoadError(...) from e``) so callers catch ours only.
"""


class StreamrecError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(StreamrecError):
    """Settings are missing or inconsistent."""


class InvalidEventError(StreamrecError):
    """An input message cannot be processed; ``reason`` goes to the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BatchFailedError(StreamrecError):
    """Handling a batch failed on something other than its input (a bug). ``learned``: the
    events (person, ``platform:event_id``) whose learning had already reached the global models;
    a retry passes it on so that they are not learned twice."""

    def __init__(self, message: str, learned: frozenset[tuple[str, str]]) -> None:
        super().__init__(message)
        self.learned = learned


class ModelLoadError(StreamrecError):
    """A model artifact is missing, corrupt or of the wrong shape."""


class ModelNotReadyError(StreamrecError):
    """A model was asked for predictions before it learned enough to make any."""


class ModelFitError(StreamrecError):
    """Fitting an online model failed (e.g. the reranker's fitting process died)."""


class ExportError(StreamrecError):
    """Exporting or training a model failed."""


class ExportValidationError(ExportError):
    """An exported model does not match its reference within the spec's tolerance."""


class BrokerError(StreamrecError):
    """A broker could not be started, reached or read (the embedded one, or a cluster's
    partitions at recovery)."""


class ComparisonError(StreamrecError):
    """Two evaluation runs cannot be compared (no targets file, or not the same targets)."""


class DatasetError(StreamrecError):
    """An evaluation dataset is missing or malformed."""
