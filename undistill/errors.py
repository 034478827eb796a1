"""The exception root of undistill. Every message names the bad value and says how to fix it."""


class UndistillError(Exception):
    """Base class of every error undistill raises on purpose."""


class ConfigError(UndistillError):
    """A preset, a flag or a config file asks for something that cannot be run."""


class DamagedSweepError(UndistillError):
    """A sweep's own bookkeeping file cannot be read."""
