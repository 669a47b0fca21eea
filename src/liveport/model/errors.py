"""The exception every layer raises for a problem a user can act on.

A LiveportError's message is one line that names the thing at fault; the CLI prints it and
exits non-zero without a traceback. Anything else escaping is a bug.
"""


class LiveportError(Exception):
    """A user-facing error: bad input, a missing prerequisite, a refused operation."""

    exit_code = 2


class InvalidInput(LiveportError):
    """An argument or database value is malformed."""


class NotFound(LiveportError):
    """A named object (chassis, port, VM, lab) does not exist."""


class Conflict(LiveportError):
    """The operation contradicts existing state (duplicate name, already running, ...)."""


class Timeout(LiveportError):
    """A wait on database or switch state did not reach its condition in time."""

    exit_code = 3
