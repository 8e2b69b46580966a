"""The one error tree of commhub: adapters wrap library errors into these at the boundary."""

from __future__ import annotations


class CommhubError(Exception):
    """Root of every error commhub raises on purpose."""


class ConfigError(CommhubError):
    """The configuration is missing a key, has a bad value, or cannot be read."""


class RetryableError(CommhubError):
    """A peer failed in a way that may pass: network drop, 4xx SMTP reply, timeout."""


class DeliveryInDoubt(RetryableError):
    """The whole message reached the peer but its answer did not reach us (the connection broke
    or timed out while we waited for it): the peer may or may not have taken it. Sending it
    again may deliver it twice; a caller that keeps count resends it with the same id."""


class AuthError(CommhubError):
    """A peer refused our credentials: retrying with the same ones will not help."""


class PermanentError(CommhubError):
    """A peer refused the request for good (5xx SMTP reply, invalid number, unknown channel)."""


class NotFound(CommhubError):
    """The thing asked for does not exist."""


class ValidationError(CommhubError):
    """Input from a user or a file is not acceptable; the message says why."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field
