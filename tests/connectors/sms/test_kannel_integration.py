"""commhub ↔ a real Kannel (bearerbox + smsbox) ↔ us as its fake SMSC: MT, MO, DLR, STOP."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from hub.consent import is_suppressed
from hub.customers import create_customer, find_by_phone
from hub.models.sms import SmsMessage
from hub.services import Hub
from hub.sms.service import SmsSuppressed, send_sms, sms_to_dict
from hub.sms.text import analyze
from hub.timeline import timeline
from tests.connectors.sms.conftest import KannelRig, eventually
from tests.connectors.sms.fakesmsc import concat_info

pytestmark = pytest.mark.peer("kannel")


async def _customer(hub: Hub, name: str, phone: str) -> int:
    async with hub.sessions() as session, session.begin():
        customer = await create_customer(session, {"name": name, "phones": [phone]}, hub.region)
        return customer.id


async def _message(hub: Hub, **where: Any) -> dict[str, Any] | None:
    async with hub.sessions() as session:
        stmt = select(SmsMessage)
        for key, value in where.items():
            stmt = stmt.where(getattr(SmsMessage, key) == value)
        row = await session.scalar(stmt.order_by(SmsMessage.id.desc()))
        return sms_to_dict(row) if row else None


@pytest.mark.parametrize(
    ("label", "text", "ucs2", "parts"),
    [
        ("latin", "Hallo Jürgen, Ihr Termin: {Mo} [10:00] ~ 5 € \u2013 bis dann!", True, 1),
        ("latin-gsm", "Hallo Jurgen, Termin {Mo} [10:00] ~ 5 EUR €, Grüße!", False, 1),
        ("cyrillic", "Здравствуйте! Ваш заказ №123 готов.", True, 1),
        ("emoji", "Thanks 😀 see you 🎉", True, 1),
        ("long", ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 8)[:400], False, 3),
        ("long-cyrillic", ("Съешь же ещё этих мягких французских булок. " * 5)[:200], True, 3),
    ],
)
async def test_mt_reaches_the_smsc_with_text_and_encoding(
    kannel_rig: KannelRig, label: str, text: str, ucs2: bool, parts: int
) -> None:
    hub = kannel_rig.hub
    number = "+4915112300" + str(abs(hash(label)) % 1000).zfill(3)
    customer_id = await _customer(hub, f"Customer {label}", number)

    sent = await send_sms(hub, customer_id=customer_id, text=text, source="test")

    got = await kannel_rig.smsc.next_message(receiver=number)
    info = analyze(text)
    assert (info.encoding == "ucs2") is ucs2
    assert sent["encoding"] == info.encoding and sent["segments"] == parts == info.segments
    assert len(got.parts) == parts
    assert got.text(ucs2=ucs2) == text
    if parts == 1:
        assert got.kind == ("ucs-2" if ucs2 else "text")
    else:
        refs = {concat_info(udh) for udh in got.udhs}
        assert [seq for _ref, _total, seq in sorted(r for r in refs if r)] == list(
            range(1, parts + 1)
        )
    if ucs2 and "😀" in text:
        assert "😀".encode("utf-16-be") == b"\xd8\x3d\xde\x00"
        assert b"\xd8\x3d\xde\x00" in got.payload  # a surrogate pair, not '?'
    assert sent["customer_id"] == customer_id and sent["to"] == number
    assert sent["status"] in ("sent", "delivered")
    assert sent["cost"] == pytest.approx(0.05 * parts)


async def test_delivery_reports_move_the_status_to_delivered(kannel_rig: KannelRig) -> None:
    hub = kannel_rig.hub
    customer_id = await _customer(hub, "Delivery Dora", "+4915112301001")
    sent = await send_sms(hub, customer_id=customer_id, text="Your parcel is on its way")
    await kannel_rig.smsc.next_message(receiver="+4915112301001")

    async def delivered() -> dict[str, Any] | None:
        msg = await _message(hub, reference=sent["reference"])
        return msg if msg and msg["status"] == "delivered" else None

    msg = await eventually(delivered)
    assert [h["status"] for h in msg["history"]] == ["queued", "sent", "delivered"]
    assert msg["final_at"] is not None and msg["gateway_id"] == sent["reference"]
    async with hub.sessions() as session:
        rows = await timeline(session, customer_id)
    assert [(r.channel, r.direction, r.status) for r in rows] == [("sms", "outbound", "delivered")]


async def test_mo_is_logged_against_the_right_customer(kannel_rig: KannelRig) -> None:
    hub = kannel_rig.hub
    mine = await _customer(hub, "Mo Sender", "+4915112302001")
    other = await _customer(hub, "Someone Else", "+4915112302002")

    await kannel_rig.smsc.send_mo(
        "+4915112302001", "12345", "Kann ich Dienstag um 10 kommen? ✓", ucs2=True
    )
    await kannel_rig.smsc.send_mo("+4915112302001", "12345", "Привет, это я & 50% ok?")

    async def two() -> list[Any] | None:
        async with hub.sessions() as session:
            rows = await timeline(session, mine)
        return rows if len(rows) == 2 else None

    rows = await eventually(two)
    assert {r.summary for r in rows} == {
        "Kann ich Dienstag um 10 kommen? ✓",
        "Привет, это я & 50% ok?",
    }
    assert all(r.channel == "sms" and r.direction == "inbound" for r in rows)
    async with hub.sessions() as session:
        assert await timeline(session, other) == []


async def test_mo_from_unknown_number_creates_a_lead(kannel_rig: KannelRig) -> None:
    hub = kannel_rig.hub
    await kannel_rig.smsc.send_mo("+4915112303001", "12345", "Hi, please call me back")

    async def lead() -> int | None:
        async with hub.sessions() as session:
            customer = await find_by_phone(session, "+4915112303001")
            return customer.id if customer else None

    lead_id = await eventually(lead)
    async with hub.sessions() as session:
        rows = await timeline(session, lead_id)
    assert [r.summary for r in rows] == ["Hi, please call me back"]


async def test_stop_suppresses_at_once_and_is_confirmed_start_resubscribes(
    kannel_rig: KannelRig,
) -> None:
    hub = kannel_rig.hub
    number = "+4915112304001"
    await _customer(hub, "Stop Stefan", number)

    await kannel_rig.smsc.send_mo(number, "12345", " stop ")
    confirmation = await kannel_rig.smsc.next_message(receiver=number)
    assert confirmation.text(ucs2=False) == hub.config.sms.stop_reply
    async with hub.sessions() as session:
        assert await is_suppressed(session, "sms", number)
    with pytest.raises(SmsSuppressed):
        await send_sms(hub, to=number, text="Big sale!", marketing=True)
    # A transactional message (an agent's answer) still goes out.
    await send_sms(hub, to=number, text="Your appointment is confirmed")
    assert (await kannel_rig.smsc.next_message(receiver=number)).text(ucs2=False) == (
        "Your appointment is confirmed"
    )

    await kannel_rig.smsc.send_mo(number, "12345", "START")
    confirmation = await kannel_rig.smsc.next_message(receiver=number)
    assert confirmation.text(ucs2=False) == hub.config.sms.start_reply
    async with hub.sessions() as session:
        assert not await is_suppressed(session, "sms", number)
    await send_sms(hub, to=number, text="Big sale!", marketing=True)
    assert (await kannel_rig.smsc.next_message(receiver=number)).text(ucs2=False) == "Big sale!"
