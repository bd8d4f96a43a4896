"""The one error type of the offline store, so the CLI can print its message without a traceback."""


class OfflineError(ValueError):
    """A training-set request that cannot be answered: the message names the column, feature or file."""
