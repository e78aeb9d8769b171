"""The error types the CLI turns into one-line messages and exit codes."""

from __future__ import annotations


class Img2MeshError(Exception):
    """Base of every error img2mesh reports as one line (no traceback without --verbose)."""

    exit_code = 1
    category = "error"  # what `--json` reports as the failure's kind


class UsageError(Img2MeshError):
    """The command line, a config file or an option is wrong: nothing ran (exit 2)."""

    exit_code = 2
    category = "usage"


class InputError(Img2MeshError):
    """One input cannot be processed; a batch goes on with the others (exit 1)."""

    category = "input"


class StageError(Img2MeshError):
    """A stage failed on one input; a batch goes on with the others (exit 1)."""

    category = "stage"


class LockedError(UsageError):
    """Another live img2mesh process is writing to the same output folder."""

    category = "locked"


class WeightsError(Img2MeshError):
    """A weight file is missing and cannot be fetched; the message says what to get and where."""

    category = "weights"


class OccupiedError(UsageError):
    """The output folder holds another input's results (``--force`` replaces them): nothing ran (exit 2)."""

    category = "occupied"
