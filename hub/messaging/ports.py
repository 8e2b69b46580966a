"""Interfaces the core consumes for outgoing email and SMS; connectors implement them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from hub.errors import PermanentError


@dataclass(frozen=True)
class OutgoingEmail:
    """One email to send; the sender adds Date and, if missing, Message-ID."""

    to: str
    subject: str
    text: str | None = None
    html: str | None = None
    from_address: str | None = None  # None: the configured [smtp] from_address
    reply_to: str | None = None
    message_id: str | None = None  # "<...@domain>"; set it to know the id before sending
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. List-Unsubscribe


class EmailRejected(PermanentError):
    """A 5xx refusal. `recipient` is set only when the server refused the address itself (RCPT, or
    a 5.1.x status at DATA): the caller must then suppress it (hub.consent.suppress(..., "bounced")).
    A refusal of our sender or of the content leaves `recipient` None: not the recipient's fault."""

    def __init__(self, message: str, *, code: int, stage: str, recipient: str | None) -> None:
        super().__init__(message)
        self.code = code
        self.stage = stage  # mail | rcpt | data
        self.recipient = recipient


class EmailSender(Protocol):
    """Sends email; raises hub.errors.RetryableError (4xx, network, after its own bounded retries),
    AuthError (credentials refused) or EmailRejected, a PermanentError (5xx).

    The sender never touches the database: on EmailRejected with a `recipient`, the caller
    (hub.mail.outbound, the campaign engine) suppresses that address in its own transaction."""

    async def send(self, message: OutgoingEmail) -> str:
        """Send one message; returns its Message-ID once the server accepted it."""

    def prepare(self, message: OutgoingEmail) -> Any:
        """Compose a message now (ValidationError when it cannot be sent), to hand it to
        send_prepared later: bulk senders do the CPU work before taking a connection."""

    async def send_prepared(self, prepared: Any, *, retry_in_doubt: bool = True) -> str:
        """Send what prepare() returned; as send(). With retry_in_doubt=False, a message that
        may have arrived (its reply was lost) raises DeliveryInDoubt instead of being resent."""

    async def close(self) -> None:
        """Close pooled connections."""


@dataclass(frozen=True)
class OutgoingSms:
    """One SMS to send; `reference` is our id, echoed in delivery reports."""

    to: str  # E.164
    text: str
    reference: str
    sender: str | None = None


class SmsGateway(Protocol):
    """Sends SMS through one gateway protocol (Kannel HTTP, SMPP, generic HTTP/JSON)."""

    name: str

    async def send(self, sms: OutgoingSms) -> str:
        """Hand one SMS to the gateway; returns the gateway's message id (or our reference)."""

    async def close(self) -> None:
        """Close connections."""
