"""AMI connector errors: subclasses of hub.errors, and the mapping of socket errors onto them."""

from __future__ import annotations

from hub.errors import RetryableError


class LinkLost(RetryableError):
    """The AMI connection closed before Asterisk answered an action."""


class OriginateOutcomeUnknown(RetryableError):
    """An Originate was sent but its answer never came: the call may or may not have been placed.

    It is never resent automatically (a second click-to-call would ring the agent twice); the
    caller decides, ideally after looking at the OriginateResponse events the sink receives.
    """


def unreachable(where: str, err: BaseException) -> RetryableError:
    """Wrap a connect failure (OSError, timeout) into a RetryableError that names the peer."""
    detail = str(err) or type(err).__name__
    if isinstance(err, TimeoutError):
        detail = "connection timed out"
    return RetryableError(f"cannot reach Asterisk AMI at {where}: {detail}")
