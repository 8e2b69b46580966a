"""SMTP connector: SmtpSender (hub.messaging.ports.EmailSender over aiosmtplib), start and stop.

`commhub serve` must come up even when the relay is down: start() checks the login in the
background and logs an unreachable server at WARNING; sending then fails with RetryableError
until it is back. A refused login is logged at ERROR (the same password will never work).
"""

from __future__ import annotations

import asyncio
import logging

from hub.config import SmtpConfig
from hub.errors import AuthError, CommhubError

from .errors import GaveUp
from .sender import EmailRejected, RateLimiter, SmtpSender

__all__ = ["EmailRejected", "GaveUp", "RateLimiter", "SmtpSender", "start", "stop"]

_LOG = logging.getLogger(__name__)


async def _check_in_background(sender: SmtpSender) -> None:
    try:
        await sender.check()
    except AuthError as err:
        _LOG.error("%s; fix [smtp] username/password", err)
    except CommhubError as err:
        _LOG.warning("SMTP server not usable at start (%s); sends will retry it", err)
    else:
        _LOG.info("SMTP server %s accepted our session", sender.server)


async def start(config: SmtpConfig) -> tuple[SmtpSender, asyncio.Task[None]]:
    """A sender for the configured server, plus the background task that checks it once."""
    sender = SmtpSender(config)
    task = asyncio.create_task(_check_in_background(sender), name="smtp-check")
    return sender, task


async def stop(sender: SmtpSender, check: asyncio.Task[None] | None = None) -> None:
    """Cancel the start-up check if it still runs and close the pooled connections."""
    if check is not None and not check.done():
        check.cancel()
        await asyncio.gather(check, return_exceptions=True)
    await sender.close()
