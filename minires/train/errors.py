"""Exceptions of a training run (the CLI prints them as one ``minires: error:`` line)."""


class TrainingError(RuntimeError):
    """A run cannot start or continue (bad resume, existing output, an unwritable folder, ...)."""


class NonFiniteLossError(TrainingError):
    """The loss or a saved tensor became NaN or infinite; only finite checkpoints are ever kept."""
