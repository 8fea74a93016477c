"""Errors the CLI reports as one clear line (exit code 2) instead of a traceback."""


class BenchError(Exception):
    """Base class of every user-facing error: bad names, bad values, bad files."""


class UnknownNameError(BenchError, LookupError):
    """A registry lookup failed; the message lists the valid names and close matches."""


class ConfigError(BenchError, ValueError):
    """A configuration value is out of range or inconsistent; the message names it."""


class NonFiniteOutputError(BenchError, FloatingPointError):
    """A defense produced NaN/Inf; the message names the defense and the sample indices."""


class StoreError(BenchError):
    """The result store cannot be opened or written (e.g. the file is not a database)."""


class MissingAssetError(BenchError, FileNotFoundError):
    """A model or dataset file is missing or fails its checksum; the message says what to do."""


class PluginError(BenchError, ValueError):
    """A plug-in failed to load, or two plug-ins claim the same name; the message names both."""
