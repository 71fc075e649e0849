"""Exceptions that carry a message meant for the user.

The CLI catches :class:`UserError`, prints ``str(e)`` as one line on stderr and exits with
``e.exit_code``; it never shows a traceback for them. Anything else escaping is a bug.
"""

from __future__ import annotations


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


class UserError(Exception):
    """A mistake the user can fix (bad argument, bad config, unknown job id...).

    The message is kept on one line (embedded newlines are folded into spaces) because the
    CLI prints it as a single line.
    """

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        self.message = _one_line(message)
        super().__init__(self.message)
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class ConfigError(UserError):
    """The configuration file or environment is invalid. Nothing is started."""

    exit_code = 2
