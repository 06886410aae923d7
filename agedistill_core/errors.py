"""Errors a user can act on.  Each message names the item and the fix.

The CLI prints ``AgedistillError`` messages as one line (no traceback); any
other exception is a bug and keeps its traceback.
"""


class AgedistillError(Exception):
    """Base class: the message is meant for the user, in one line."""


class ConfigError(AgedistillError):
    """params.yaml, a profile or an option is wrong."""


class DataError(AgedistillError):
    """A data root, manifest or shard is missing or malformed."""


class UnreadableImage(AgedistillError):
    """One image cannot be decoded; long runs record it and go on."""


class CheckpointError(AgedistillError):
    """A checkpoint is missing, truncated or not one of ours."""
