"""Errors a user can act on. The CLI prints them as one line and exits with `exit_code`."""

from __future__ import annotations


class RigError(Exception):
    """A user-facing error: bad input, missing device, unusable file.

    The message must be one line that says what is wrong and what to do.
    """

    exit_code: int = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill PID``, ``systemctl stop``, ``docker stop``) raised as an exception, so that the
    paths that stop cleanly on Ctrl-C run for it too. The CLI exits with 143 (128 + 15)."""


class ConfigError(RigError):
    """A config or session file fails validation (exit code 2)."""


class DeviceError(RigError):
    """A device is missing, busy or failed (exit code 3)."""

    exit_code = 3


class PartialFailure(RigError):
    """A batch command finished, but some of its items failed (exit code 5). Each failure was
    listed as it happened; this one line counts them. Everything that succeeded is kept."""

    exit_code = 5
