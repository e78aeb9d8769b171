"""The error types the CLI turns into one-line messages and exit codes."""

from __future__ import annotations


class Img2MeshError(Exception):
    """Base of every error img2mesh reports as one line (no traceback without --verbose)."""

    exit_code = 1


class UsageError(Img2MeshError):
    """The command line, a config file or an option is wrong: nothing ran (exit 2)."""

    exit_code = 2


class InputError(Img2MeshError):
    """One input cannot be processed; a batch goes on with the others (exit 1)."""


class StageError(Img2MeshError):
    """A stage failed on one input; a batch goes on with the others (exit 1)."""


class StageNotImplementedError(StageError):
    """A stage that exists in the pipeline but has not landed yet."""

    def __init__(self, stage: str, hint: str = "") -> None:
        super().__init__(f"stage {stage} is not implemented yet" + (f"; {hint}" if hint else ""))


class LockedError(UsageError):
    """Another live img2mesh process is writing to the same output folder."""


class WeightsError(Img2MeshError):
    """A weight file is missing and cannot be fetched; the message says what to get and where."""
