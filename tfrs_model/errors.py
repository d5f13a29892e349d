"""Errors the project raises on bad input. Each message says what is wrong and how to fix it."""


class TwoTowerError(Exception):
    """Base class: the CLI prints these as one line and exits with status 2."""


class DataError(TwoTowerError, ValueError):
    """Input data is missing, malformed or empty."""


class ConfigError(TwoTowerError, ValueError):
    """A configuration value or flag is invalid."""


class RunDirError(TwoTowerError, FileNotFoundError):
    """A path that should hold a training run does not."""


class ExportError(TwoTowerError):
    """Writing or verifying a SavedModel failed."""
