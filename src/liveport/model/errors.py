"""The exception every layer raises for a problem a user can act on, and the exit status of
every liveport program.

A LiveportError's message is one line that names the thing at fault; the CLI prints it and
exits with the class' `exit_code`, without a traceback. Anything else escaping is a bug.

Exit statuses (one table for every command and daemon; docs/operations.md repeats it):

| status | meaning |
| --- | --- |
| 0 | success |
| 1 | a check found differences, or a verdict said no (`doctor`, `vhost check`) |
| 2 | usage error or bad input (arguments, configuration file, a malformed value) |
| 3 | timeout: a wait did not reach its condition in time |
| 4 | not found: a named object (lab, port, chassis, file, daemon) does not exist |
| 5 | conflict: contradicts existing state (already running, duplicate name, ...) |
| 6 | unavailable: a database, daemon, switch or socket could not be reached |
| 7 | failed: the operation was refused or failed (a transaction, a daemon's start, ...) |
| 130 | interrupted (SIGINT or SIGTERM) |
"""

from typing import Final

OK: Final = 0
NO: Final = 1
USAGE: Final = 2
TIMEOUT: Final = 3
NOT_FOUND: Final = 4
CONFLICT: Final = 5
UNAVAILABLE: Final = 6
FAILED: Final = 7
INTERRUPTED: Final = 130

EXIT_CODES: Final = {
    OK: "success",
    NO: "a check found differences, or a verdict said no",
    USAGE: "usage error or bad input",
    TIMEOUT: "timeout",
    NOT_FOUND: "not found",
    CONFLICT: "conflict with existing state",
    UNAVAILABLE: "a database, daemon, switch or socket could not be reached",
    FAILED: "the operation was refused or failed",
    INTERRUPTED: "interrupted",
}


class LiveportError(Exception):
    """A user-facing error: a refused or failed operation, unless a subclass says more."""

    exit_code = FAILED


class InvalidInput(LiveportError):
    """An argument, configuration value or database value is malformed."""

    exit_code = USAGE


class NotFound(LiveportError):
    """A named object (chassis, port, VM, lab, file) does not exist."""

    exit_code = NOT_FOUND


class Conflict(LiveportError):
    """The operation contradicts existing state (duplicate name, already running, ...)."""

    exit_code = CONFLICT


class Timeout(LiveportError):
    """A wait on database or switch state did not reach its condition in time."""

    exit_code = TIMEOUT


class Unavailable(LiveportError):
    """A database, daemon, switch or socket could not be reached."""

    exit_code = UNAVAILABLE
