"""Personal unsubscribe (and open-tracking) links: HMAC-signed tokens that cannot be forged.

A token names (channel, customer, source) where source is "c<campaign id>", "t<trigger rule id>"
or "test"; it is signed with HMAC-SHA256 under [web] secret_key and a purpose ("u" unsubscribe,
"o" open), so an open-pixel token cannot unsubscribe anybody and no token can be altered."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.consent import suppress
from hub.models.base import utcnow
from hub.models.campaigns import CampaignDelivery, CampaignRun, TriggerDelivery
from hub.models.customers import ContactPoint
from hub.timeline import record_interaction

_PAYLOAD = re.compile(r"^(email|sms)\.(\d{1,12})\.(c\d{1,12}|t\d{1,12}|test)$")
_MAC_BYTES = 16  # 128 bits: forging means guessing this


@dataclass(frozen=True)
class LinkToken:
    """What a verified token names."""

    channel: str
    customer_id: int
    source: str  # c<campaign id> | t<rule id> | test

    @property
    def campaign_id(self) -> int | None:
        """The campaign the link was sent in, if any."""
        return int(self.source[1:]) if self.source.startswith("c") else None

    @property
    def rule_id(self) -> int | None:
        """The trigger rule the link was sent by, if any."""
        return int(self.source[1:]) if self.source.startswith("t") else None


@functools.lru_cache(maxsize=8)
def _keyed(secret: str) -> hmac.HMAC:
    # Keying HMAC costs as much as the MAC itself; a campaign signs two links per message.
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


def _mac(secret: str, purpose: str, payload: str) -> str:
    if not secret:
        raise ValueError("[web] secret_key is needed to sign links")
    mac = _keyed(secret).copy()
    mac.update(f"commhub-link:{purpose}:{payload}".encode())
    return base64.urlsafe_b64encode(mac.digest()[:_MAC_BYTES]).rstrip(b"=").decode()


def make_token(
    secret: str, *, channel: str, customer_id: int, source: str, purpose: str = "u"
) -> str:
    """A URL-safe signed token for a personal link."""
    payload = f"{channel}.{customer_id}.{source}"
    if not _PAYLOAD.match(payload):
        raise ValueError(f"cannot sign {payload!r}")
    return f"{payload}.{_mac(secret, purpose, payload)}"


def read_token(secret: str, token: str, purpose: str = "u") -> LinkToken | None:
    """The token's content when its signature is right; None for anything forged or altered."""
    if not token or len(token) > 200:
        return None
    payload, _, mac = token.rpartition(".")
    match = _PAYLOAD.match(payload)
    if not match:
        return None
    # Constant-time: the comparison must not tell an attacker how many characters were right.
    if not hmac.compare_digest(mac.encode(), _mac(secret, purpose, payload).encode()):
        return None
    return LinkToken(match.group(1), int(match.group(2)), match.group(3))


def unsubscribe_url(
    base_url: str, secret: str, *, channel: str, customer_id: int, source: str
) -> str:
    """The personal unsubscribe link placed in a message and its List-Unsubscribe header."""
    token = make_token(secret, channel=channel, customer_id=customer_id, source=source)
    return f"{base_url.rstrip('/')}/u/{token}"


def open_pixel_url(base_url: str, secret: str, *, customer_id: int, campaign_id: int) -> str:
    """A 1x1 image URL that records the first open of a campaign email."""
    token = make_token(
        secret, channel="email", customer_id=customer_id, source=f"c{campaign_id}", purpose="o"
    )
    return f"{base_url.rstrip('/')}/u/{token}/open.gif"


async def addresses_of(session: AsyncSession, link: LinkToken) -> list[str]:
    """The customer's current addresses on the link's channel, plus the ones the source sent to."""
    kind = "email" if link.channel == "email" else "phone"
    found = set(
        (
            await session.scalars(
                select(ContactPoint.value).where(
                    ContactPoint.customer_id == link.customer_id, ContactPoint.kind == kind
                )
            )
        ).all()
    )
    if link.campaign_id is not None:
        found.update(
            (
                await session.scalars(
                    select(CampaignDelivery.address)
                    .join(CampaignRun, CampaignRun.id == CampaignDelivery.run_id)
                    .where(
                        CampaignRun.campaign_id == link.campaign_id,
                        CampaignDelivery.customer_id == link.customer_id,
                        CampaignDelivery.address != "",
                    )
                )
            ).all()
        )
    if link.rule_id is not None:
        found.update(
            (
                await session.scalars(
                    select(TriggerDelivery.address).where(
                        TriggerDelivery.rule_id == link.rule_id,
                        TriggerDelivery.customer_id == link.customer_id,
                        TriggerDelivery.address != "",
                    )
                )
            ).all()
        )
    return sorted(found)


async def apply_unsubscribe(session: AsyncSession, link: LinkToken, how: str) -> list[str]:
    """Suppress every address the link stands for, note it on the report and the timeline.

    Idempotent: a second click changes nothing. Returns the suppressed addresses."""
    addresses = await addresses_of(session, link)
    newly = [
        address
        for address in addresses
        if await suppress(session, link.channel, address, "unsubscribed", f"link ({how})")
    ]
    now = utcnow()
    if link.campaign_id is not None:
        changed = (
            (
                await session.execute(
                    update(CampaignDelivery)
                    .where(
                        CampaignDelivery.customer_id == link.customer_id,
                        CampaignDelivery.state == "sent",
                        CampaignDelivery.unsubscribed_at.is_(None),
                        CampaignDelivery.run_id.in_(
                            select(CampaignRun.id).where(
                                CampaignRun.campaign_id == link.campaign_id
                            )
                        ),
                    )
                    .values(unsubscribed_at=now)
                    .returning(CampaignDelivery.run_id)
                )
            )
            .scalars()
            .all()
        )
        for run_id in set(changed):
            await session.execute(
                update(CampaignRun)
                .where(CampaignRun.id == run_id)
                .values(unsubscribed_count=CampaignRun.unsubscribed_count + changed.count(run_id))
            )
    if link.rule_id is not None:
        await session.execute(
            update(TriggerDelivery)
            .where(
                TriggerDelivery.rule_id == link.rule_id,
                TriggerDelivery.customer_id == link.customer_id,
                TriggerDelivery.unsubscribed_at.is_(None),
            )
            .values(unsubscribed_at=now)
        )
    if newly:
        await record_interaction(
            session,
            channel=link.channel,
            external_id=f"unsubscribe:{link.channel}.{link.customer_id}.{link.source}",
            customer_id=link.customer_id,
            direction="inbound",
            status="unsubscribed",
            summary=f"Unsubscribed from {link.channel} marketing ({how})",
            data={"addresses": newly, "source": link.source},
        )
    return newly


async def record_open(session: AsyncSession, link: LinkToken) -> bool:
    """Note the first open of a campaign email; True if this was the first."""
    if link.campaign_id is None:
        return False
    result = await session.execute(
        update(CampaignDelivery)
        .where(
            CampaignDelivery.customer_id == link.customer_id,
            CampaignDelivery.state == "sent",
            CampaignDelivery.opened_at.is_(None),
            CampaignDelivery.run_id.in_(
                select(CampaignRun.id).where(CampaignRun.campaign_id == link.campaign_id)
            ),
        )
        .values(opened_at=utcnow())
    )
    return bool(getattr(result, "rowcount", 0))
