"""IMAP connector errors, all under hub.errors."""

from __future__ import annotations

from hub.errors import RetryableError


class ConnectionLost(RetryableError):
    """The IMAP server closed the connection (or said BYE) while we waited for it."""


class CommandFailed(RetryableError):
    """The server answered NO or BAD to a command we need (SELECT of a missing mailbox...)."""


class CommandTimedOut(RetryableError):
    """The server did not answer a command in time: the link is treated as dead."""
