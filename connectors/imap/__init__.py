"""IMAP connector: ImapWatcher (IDLE or polling, UID-incremental, reconnecting), start and stop.

`commhub serve` must come up even when the IMAP server is down: start() logs and the watcher keeps
retrying with backoff; a refused login is logged at ERROR and retried only every reconnect_max.
"""

from __future__ import annotations

from hub.mail.ports import InboundSink

from .errors import CommandFailed, CommandTimedOut, ConnectionLost
from .watcher import ImapSettings, ImapWatcher, MailboxStatus

__all__ = [
    "CommandFailed",
    "CommandTimedOut",
    "ConnectionLost",
    "ImapSettings",
    "ImapWatcher",
    "MailboxStatus",
    "start",
    "stop",
]


def start(settings: ImapSettings, sink: InboundSink) -> ImapWatcher:
    """Start watching (in the background); never fails for an unreachable server."""
    watcher = ImapWatcher(settings, sink)
    watcher.start()
    return watcher


async def stop(watcher: ImapWatcher) -> None:
    """Stop every mailbox task; each logs out."""
    await watcher.stop()
