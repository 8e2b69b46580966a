"""SMTP connector errors: map aiosmtplib exceptions onto hub.errors (and EmailRejected)."""

from __future__ import annotations

import aiosmtplib

from hub.errors import AuthError, CommhubError, RetryableError
from hub.messaging.ports import EmailRejected

from .const import ADDRESS_STATUS_PREFIXES

# Exceptions that mean "the connection is unusable": close it and try again on a fresh one.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPConnectError,
    aiosmtplib.SMTPTimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)


def reply_text(err: aiosmtplib.SMTPResponseException) -> str:
    """The server's reply as one line, e.g. '451 4.3.0 try again later'."""
    return f"{err.code} {' '.join(err.message.split())}"


def stage_of(err: aiosmtplib.SMTPResponseException) -> str:
    """Which step of the transaction the server refused: mail, rcpt or data."""
    if isinstance(err, aiosmtplib.SMTPSenderRefused):
        return "mail"
    if isinstance(err, aiosmtplib.SMTPRecipientRefused):
        return "rcpt"
    return "data"


def blames_address(stage: str, message: str) -> bool:
    """True when a 5xx refusal is about the recipient address (so the address is suppressed)."""
    if stage == "rcpt":
        return True
    if stage == "data":
        status = message.strip().split(" ", 1)[0]
        return status.startswith(ADDRESS_STATUS_PREFIXES)
    return False


def rejected(err: aiosmtplib.SMTPResponseException, recipient: str, server: str) -> EmailRejected:
    """A 5xx reply as EmailRejected; `recipient` only when the address itself was refused."""
    stage = stage_of(err)
    return EmailRejected(
        f"{server} refused the message to {recipient} at {stage.upper()}: {reply_text(err)}",
        code=err.code,
        stage=stage,
        recipient=recipient if blames_address(stage, err.message) else None,
    )


def auth_failed(err: aiosmtplib.SMTPAuthenticationError, server: str) -> AuthError:
    """The server refused our credentials."""
    return AuthError(f"{server} refused the SMTP login: {reply_text(err)}")


def unreachable(err: BaseException, server: str) -> RetryableError:
    """A network-level failure as RetryableError naming the server."""
    detail = str(err) or type(err).__name__
    if isinstance(err, TimeoutError) and not str(err):
        detail = "timed out"
    return RetryableError(f"cannot talk to SMTP server {server}: {detail}")


class GaveUp(RetryableError):
    """Every attempt got a 4xx reply or a network error; `last` says what the final one was."""

    def __init__(self, message: str, *, attempts: int, last: CommhubError | str) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last = str(last)
