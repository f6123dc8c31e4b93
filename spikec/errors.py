"""Errors the CLI turns into one-line messages and exit codes."""


class SpikecError(Exception):
    """A failure the user can act on (bad file, unsupported layer): exit code 1."""


class UsageError(SpikecError):
    """The command line asked for something invalid (unknown name, bad flag value): exit code 2."""
