"""Messengers: how the engine hands one rendered message to a channel (listmonk's Messenger).

The engine only knows this protocol and a name-keyed registry; EmailMessenger and SmsMessenger
adapt the hub's EmailSender and SmsGateway ports. A campaign naming a messenger the registry does
not have is cancelled with a reason, never left hanging."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from hub.campaigns.templates import Rendered
from hub.errors import ConfigError
from hub.messaging.ports import EmailSender, OutgoingEmail, OutgoingSms, SmsGateway


@dataclass(frozen=True)
class Envelope:
    """Where one message goes and how it is known: `message_id` is fixed before sending and
    reused on every retry, so a resend after a crash carries the same Message-ID / reference."""

    to: str
    message_id: str
    customer_id: int | None = None
    from_address: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    tag: str = ""  # "campaign:<id>" | "trigger:<id>" | "test": where the message comes from


class Messenger(Protocol):
    """Sends one rendered message; raises RetryableError or PermanentError (hub.errors).

    Sending is two steps so that the CPU part can run ahead of the provider's connections:
    prepare() (may raise ValidationError: the message can never be sent) and deliver()."""

    name: str

    def prepare(self, envelope: Envelope, rendered: Rendered) -> Any:
        """Everything up to the provider's door (e.g. compose the email); no I/O."""

    async def deliver(self, prepared: Any) -> str:
        """Hand it over; returns the provider's id once the provider has accepted it."""

    async def push(self, envelope: Envelope, rendered: Rendered) -> str:
        """prepare() and deliver() in one."""

    async def close(self) -> None:
        """Release connections."""


class EmailMessenger:
    """Campaign email over the hub's EmailSender (SMTP connection pool)."""

    def __init__(self, sender: EmailSender, name: str = "email") -> None:
        self.name = name
        self._sender = sender

    def prepare(self, envelope: Envelope, rendered: Rendered) -> Any:
        """Compose with our Message-ID and the one-click unsubscribe headers."""
        return self._sender.prepare(
            OutgoingEmail(
                to=envelope.to,
                subject=rendered.subject,
                text=rendered.text or None,
                html=rendered.html or None,
                from_address=envelope.from_address,
                message_id=envelope.message_id,
                headers=dict(envelope.headers),
            )
        )

    async def deliver(self, prepared: Any) -> str:
        """Send through SMTP."""
        # In doubt goes back to the engine, which resends with the same Message-ID and counts it.
        return await self._sender.send_prepared(prepared, retry_in_doubt=False)

    async def push(self, envelope: Envelope, rendered: Rendered) -> str:
        """Compose and send."""
        return await self.deliver(self.prepare(envelope, rendered))

    async def close(self) -> None:
        """The sender belongs to the email wiring, which closes it."""


SmsSend = Callable[[Envelope, Rendered], Awaitable[str]]


class SmsMessenger:
    """Campaign SMS over the hub's SmsGateway; the reference comes back in delivery reports.

    `via`, when given, sends through the SMS service instead (hub.sms.service.send_sms: it logs
    the message, tracks delivery reports by our reference, and sends a reference only once)."""

    def __init__(
        self,
        gateway: SmsGateway,
        sender: str | None = None,
        name: str = "sms",
        via: SmsSend | None = None,
    ) -> None:
        self.name = name
        self._gateway = gateway
        self._sender = sender
        self._via = via

    def prepare(self, envelope: Envelope, rendered: Rendered) -> Any:
        """Nothing to compose: the gateway takes the text as it is."""
        return (envelope, rendered)

    async def deliver(self, prepared: Any) -> str:
        """Hand the text to the gateway."""
        envelope, rendered = prepared
        return await self.push(envelope, rendered)

    async def push(self, envelope: Envelope, rendered: Rendered) -> str:
        """Hand the text to the gateway."""
        if self._via is not None:
            return await self._via(envelope, rendered)
        return await self._gateway.send(
            OutgoingSms(
                to=envelope.to,
                text=rendered.text,
                reference=envelope.message_id,
                sender=self._sender,
            )
        )

    async def close(self) -> None:
        """The gateway belongs to the SMS wiring, which closes it."""


class MessengerRegistry:
    """Messengers by name; registering a name twice is a configuration error."""

    def __init__(self) -> None:
        self._by_name: dict[str, Messenger] = {}

    def register(self, messenger: Messenger) -> None:
        """Add a messenger; ConfigError if the name is taken."""
        if not messenger.name or not messenger.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"messenger name {messenger.name!r} must be letters, digits, - or _")
        if messenger.name in self._by_name:
            raise ConfigError(f"a messenger named {messenger.name!r} is already registered")
        self._by_name[messenger.name] = messenger

    def get(self, name: str) -> Messenger | None:
        """The messenger, or None when unknown."""
        return self._by_name.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._by_name))

    async def close(self) -> None:
        """Close every messenger."""
        for messenger in self._by_name.values():
            await messenger.close()
