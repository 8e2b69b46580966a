"""What the IMAP watcher hands to the hub, and what the hub offers it (no connector import here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol


@dataclass(frozen=True)
class MailRef:
    """Where one message was read: account, mailbox, UIDVALIDITY and UID (and its size)."""

    account: str
    mailbox: str
    uidvalidity: int
    uid: int
    size: int | None = None


class MailboxState(NamedTuple):
    """How far a mailbox has been read: every UID up to `last_uid` was handled."""

    uidvalidity: int
    last_uid: int


class InboundSink(Protocol):
    """The hub side of the IMAP watcher. Raising from any method makes the watcher retry later."""

    async def load_state(self, account: str, mailbox: str) -> MailboxState | None:
        """The stored state, or None the first time this mailbox is watched."""

    async def save_state(self, account: str, mailbox: str, state: MailboxState) -> None:
        """Store a state outright: first sight of a mailbox or a new UIDVALIDITY."""

    async def deliver(self, ref: MailRef, raw: bytes, *, headers_only: bool = False) -> None:
        """Handle one message and record ref.uid as the last UID seen, in one transaction.

        `headers_only`: the message exceeded the size limit and only its header was fetched."""
