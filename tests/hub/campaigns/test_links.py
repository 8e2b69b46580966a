"""Unsubscribe tokens cannot be forged or altered; unsubscribing suppresses and is idempotent."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hub.campaigns.consent import apply_unsubscribe, make_token, read_token
from hub.consent import is_suppressed
from hub.customers import create_customer
from hub.models.interactions import Interaction

SECRET = "test-secret-key-0123456789abcdef"


def test_round_trip():
    token = make_token(SECRET, channel="email", customer_id=42, source="c7")
    link = read_token(SECRET, token)
    assert link is not None
    assert (link.channel, link.customer_id, link.campaign_id, link.rule_id) == (
        "email",
        42,
        7,
        None,
    )
    assert token.replace("-", "").replace("_", "").replace(".", "").isalnum()  # URL-safe


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t.replace("email.42.", "email.43."),  # another customer
        lambda t: t.replace(".c7.", ".c8."),  # another campaign
        lambda t: t.replace("email.", "sms."),  # another channel
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # another signature
        lambda t: t.rsplit(".", 1)[0],  # no signature
        lambda t: t + "x",
        lambda t: "",
        lambda t: "email.42.c7." + "A" * 22,
        lambda t: t.replace("c7", "c7 OR 1=1"),
    ],
)
def test_altered_or_forged_tokens_are_refused(tamper):
    token = make_token(SECRET, channel="email", customer_id=42, source="c7")
    assert read_token(SECRET, tamper(token)) is None


def test_other_secret_and_other_purpose_are_refused():
    token = make_token(SECRET, channel="email", customer_id=42, source="c7")
    assert read_token("another-secret-0123456789abcdef", token) is None
    pixel = make_token(SECRET, channel="email", customer_id=42, source="c7", purpose="o")
    assert read_token(SECRET, pixel) is None  # an open pixel cannot unsubscribe anybody
    assert read_token(SECRET, pixel, purpose="o") is not None


async def test_unsubscribe_suppresses_every_address_once(chub):
    async with chub.sessions() as session, session.begin():
        customer = await create_customer(
            session, {"name": "Uma", "emails": ["uma@x.test", "uma@work.test"]}, "DE"
        )
    link = read_token(
        SECRET, make_token(SECRET, channel="email", customer_id=customer.id, source="c1")
    )
    assert link is not None
    async with chub.sessions() as session, session.begin():
        assert await apply_unsubscribe(session, link, "one-click") == [
            "uma@work.test",
            "uma@x.test",
        ]
    async with chub.sessions() as session, session.begin():
        assert await apply_unsubscribe(session, link, "link") == []  # idempotent
        assert await is_suppressed(session, "email", "uma@x.test")
        notes = (
            await session.scalars(select(Interaction).where(Interaction.customer_id == customer.id))
        ).all()
    assert [(n.status, n.direction) for n in notes] == [("unsubscribed", "inbound")]
