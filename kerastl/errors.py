"""Errors that are the user's to fix.

Anything raised as a `KerastlError` is shown by the CLI as one message, without a
traceback, and the process exits with status 2. Everything else is a bug in kerastl (or
in the stack under it) and keeps its traceback.
"""


class KerastlError(Exception):
    """A mistake in the user's input (config, data, arguments) with a clear message."""

    exit_code = 2


class ConfigError(KerastlError):
    """A config file or override that does not validate."""


class DataError(KerastlError):
    """Data that cannot be used as given (missing folder, empty class, ...)."""


class ModelError(KerastlError):
    """A backbone, weights file or run that cannot be used as given."""
