"""SMS service on SQLite and PostgreSQL: logging, delivery-report rules, inbound, STOP/START.

The gateway here is a recording stand-in at the port (hub.messaging.ports.SmsGateway); the same
service runs against the real Kannel in tests/connectors/sms/test_kannel_integration.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from hub.config import Config
from hub.consent import is_suppressed
from hub.customers import create_customer, find_by_phone
from hub.errors import PermanentError, RetryableError, ValidationError
from hub.messaging.ports import OutgoingSms
from hub.models.interactions import Interaction
from hub.models.sms import SmsMessage, SmsPendingReport
from hub.runtime import running_hub
from hub.services import Hub
from hub.sms.events import DeliveryReport, InboundSms
from hub.sms.service import (
    SmsNotConfigured,
    SmsSuppressed,
    apply_report,
    expire_stale,
    keyword_of,
    purge_pending_reports,
    receive_sms,
    send_sms,
)


class RecordingGateway:
    """Keeps what it was asked to send; answers with g-<n> ids; can fail or run a hook first."""

    name = "rec"

    def __init__(self) -> None:
        self.sent: list[OutgoingSms] = []
        self.fail: Exception | None = None
        self.before_answer: Callable[[str], Awaitable[None]] | None = None

    async def send(self, sms: OutgoingSms) -> str:
        if self.fail is not None:
            raise self.fail
        self.sent.append(sms)
        gateway_id = f"g-{len(self.sent)}"
        if self.before_answer is not None:
            await self.before_answer(gateway_id)
        return gateway_id

    async def close(self) -> None:
        return None


@pytest.fixture
async def sms_hub(config: Config, db_url: str) -> AsyncIterator[Hub]:
    """A hub on the parametrised database with the recording gateway as hub.parts["sms"]."""
    cfg = replace(
        config,
        database=replace(config.database, url=db_url),
        sms=replace(config.sms, gateway="rec", create_leads=True, cost_per_segment=0.1),
    )
    async with running_hub(cfg, migrate=False, connectors=False) as hub:
        hub.parts["sms"] = RecordingGateway()
        yield hub


def gw(hub: Hub) -> RecordingGateway:
    part = hub.part("sms")
    assert isinstance(part, RecordingGateway)
    return part


async def _customer(hub: Hub, phones: list[object], name: str = "Ann") -> int:
    async with hub.sessions() as session, session.begin():
        return (await create_customer(session, {"name": name, "phones": phones}, hub.region)).id


async def _row(hub: Hub, reference: str) -> SmsMessage:
    async with hub.sessions() as session:
        row = await session.scalar(select(SmsMessage).where(SmsMessage.reference == reference))
        assert row is not None
        return row


def _statuses(row: SmsMessage) -> list[str]:
    return [h["status"] for h in row.history]


async def test_send_logs_against_customer_and_picks_the_mobile(sms_hub: Hub) -> None:
    cid = await _customer(sms_hub, [{"value": "030 1234567", "label": "work"}, "0151 2345 6789"])
    msg = await send_sms(sms_hub, customer_id=cid, text="Hi " * 60, user_id=None)
    assert gw(sms_hub).sent[0].to == "+4915123456789"
    assert (msg["status"], msg["gateway_id"], msg["customer_id"]) == ("sent", "g-1", cid)
    assert (msg["encoding"], msg["segments"], msg["cost"]) == ("gsm7", 2, pytest.approx(0.2))
    async with sms_hub.sessions() as session:
        inter = await session.scalar(
            select(Interaction).where(Interaction.external_id == msg["reference"])
        )
    assert inter is not None
    assert (inter.channel, inter.direction, inter.status, inter.customer_id) == (
        "sms",
        "outbound",
        "sent",
        cid,
    )


async def test_send_by_number_matches_the_customer_and_normalises(sms_hub: Hub) -> None:
    cid = await _customer(sms_hub, ["+49 151 11112222"])
    msg = await send_sms(sms_hub, to="0151/1111 2222", text="hello")
    assert (msg["to"], msg["customer_id"]) == ("+4915111112222", cid)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"to": "not a number", "text": "x"}, "phone"),
        ({"text": "x"}, "to"),
        ({"to": "+4915111112222", "text": "   "}, "text"),
        ({"to": "+4915111112222", "text": "x" * 50_000}, "text"),
    ],
)
async def test_send_refuses_bad_input(sms_hub: Hub, kwargs: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        await send_sms(sms_hub, **kwargs)  # type: ignore[arg-type]
    assert err.value.field == field
    assert gw(sms_hub).sent == []


async def test_customer_without_phone_is_refused(sms_hub: Hub) -> None:
    cid = await _customer(sms_hub, [])
    with pytest.raises(ValidationError, match="no phone"):
        await send_sms(sms_hub, customer_id=cid, text="x")


async def test_no_gateway_configured(sms_hub: Hub) -> None:
    sms_hub.parts.pop("sms")
    with pytest.raises(SmsNotConfigured):
        await send_sms(sms_hub, to="+4915111112222", text="x")


async def test_same_reference_sends_once(sms_hub: Hub) -> None:
    first = await send_sms(sms_hub, to="+4915111112222", text="x", reference="cmp1-r1")
    again = await send_sms(sms_hub, to="+4915111112222", text="x", reference="cmp1-r1")
    assert len(gw(sms_hub).sent) == 1
    assert first["id"] == again["id"]


async def test_gateway_refusal_marks_failed_and_a_retry_sends_again(sms_hub: Hub) -> None:
    gw(sms_hub).fail = PermanentError("invalid destination")
    with pytest.raises(PermanentError):
        await send_sms(sms_hub, to="+4915111112222", text="x", reference="r-fail")
    row = await _row(sms_hub, "r-fail")
    assert row.status == "failed" and "invalid destination" in row.error
    gw(sms_hub).fail = RetryableError("busy")
    with pytest.raises(RetryableError):
        await send_sms(sms_hub, to="+4915111112222", text="x", reference="r-fail")
    gw(sms_hub).fail = None
    msg = await send_sms(sms_hub, to="+4915111112222", text="x", reference="r-fail")
    assert msg["status"] == "sent" and msg["error"] == ""
    assert _statuses(await _row(sms_hub, "r-fail")) == [
        "queued",
        "failed",
        "queued",
        "failed",
        "queued",
        "sent",
    ]


async def test_reports_move_forward_only_and_duplicates_are_no_ops(sms_hub: Hub) -> None:
    msg = await send_sms(sms_hub, to="+4915111112222", text="x")
    report = DeliveryReport(gateway="rec", gateway_id=msg["gateway_id"], status="delivered")
    assert await apply_report(sms_hub, report) == "applied"
    assert await apply_report(sms_hub, report) == "duplicate"
    late_ack = replace(report, status="sent")
    assert await apply_report(sms_hub, late_ack) == "duplicate"
    other_final = replace(report, status="failed", detail="stat:UNDELIV")
    assert await apply_report(sms_hub, other_final) == "duplicate"
    row = await _row(sms_hub, msg["reference"])
    assert row.status == "delivered" and _statuses(row) == ["queued", "sent", "delivered"]
    async with sms_hub.sessions() as session:
        inter = await session.scalar(
            select(Interaction).where(Interaction.external_id == msg["reference"])
        )
    assert inter is not None and inter.status == "delivered" and inter.ended_at is not None


async def test_failed_report_keeps_the_reason(sms_hub: Hub) -> None:
    msg = await send_sms(sms_hub, to="+4915111112222", text="x")
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    report = DeliveryReport(
        gateway="rec",
        reference=msg["reference"],
        status="failed",
        detail="DLR 16",
        occurred_at=when,
    )
    assert await apply_report(sms_hub, report) == "applied"
    row = await _row(sms_hub, msg["reference"])
    assert (row.status, row.error, row.final_at) == ("failed", "DLR 16", when)


async def test_report_before_the_send_is_recorded_is_applied_after(sms_hub: Hub) -> None:
    outcomes: list[str] = []

    async def report_first(gateway_id: str) -> None:
        # The SMSC's receipt overtakes the submit answer: the id is not stored yet.
        for status in ("delivered", "delivered"):
            report = DeliveryReport(gateway="rec", gateway_id=gateway_id, status=status)  # type: ignore[arg-type]
            outcomes.append(await apply_report(sms_hub, report))

    gw(sms_hub).before_answer = report_first
    msg = await send_sms(sms_hub, to="+4915111112222", text="x")
    assert outcomes == ["pending", "pending"]
    assert msg["status"] == "delivered"
    assert _statuses(await _row(sms_hub, msg["reference"])) == ["queued", "sent", "delivered"]
    async with sms_hub.sessions() as session:
        assert await session.scalar(select(func.count(SmsPendingReport.id))) == 0


async def test_unknown_ids_wait_then_are_purged(sms_hub: Hub) -> None:
    report = DeliveryReport(gateway="rec", gateway_id="nobody-knows", status="delivered")
    assert await apply_report(sms_hub, report) == "pending"
    assert await purge_pending_reports(sms_hub, older_than=timedelta(days=1)) == 0
    assert await purge_pending_reports(sms_hub, older_than=timedelta(0)) == 1
    with pytest.raises(ValidationError):
        await apply_report(sms_hub, DeliveryReport(gateway="rec", status="delivered"))


async def test_expire_stale_marks_unreported_messages(sms_hub: Hub) -> None:
    msg = await send_sms(sms_hub, to="+4915111112222", text="x")
    assert await expire_stale(sms_hub, older_than=timedelta(hours=1)) == 0
    assert await expire_stale(sms_hub, older_than=timedelta(0)) == 1
    assert (await _row(sms_hub, msg["reference"])).status == "expired"


def _mo(text: str, sender: str = "+4915199990000", gid: str | None = "m1") -> InboundSms:
    return InboundSms(gateway="rec", sender=sender, recipient="12345", text=text, gateway_id=gid)


async def test_inbound_is_matched_to_the_customer_once(sms_hub: Hub) -> None:
    cid = await _customer(sms_hub, ["+4915199990000"])
    first = await receive_sms(sms_hub, _mo("Hello there"))
    again = await receive_sms(sms_hub, _mo("Hello there"))
    assert first["message"]["customer_id"] == cid and not first["duplicate"]
    assert again["duplicate"] and again["message"]["id"] == first["message"]["id"]
    async with sms_hub.sessions() as session:
        count = await session.scalar(
            select(func.count(Interaction.id)).where(Interaction.customer_id == cid)
        )
    assert count == 1


async def test_inbound_from_unknown_number_creates_a_lead_when_configured(sms_hub: Hub) -> None:
    result = await receive_sms(sms_hub, _mo("who is this?", sender="0151 77776666"))
    assert result["lead_created"]
    async with sms_hub.sessions() as session:
        lead = await find_by_phone(session, "+4915177776666")
    assert lead is not None and lead.source == "sms"
    sms_hub.config = replace(sms_hub.config, sms=replace(sms_hub.config.sms, create_leads=False))
    result = await receive_sms(sms_hub, _mo("again", sender="+4915155554444", gid="m2"))
    assert result["message"]["customer_id"] is None and not result["lead_created"]


async def test_inbound_from_a_short_code_is_kept_unmatched(sms_hub: Hub) -> None:
    result = await receive_sms(sms_hub, _mo("STOP", sender="INFO-SVC"))
    assert result["message"]["from"] == "INFO-SVC" and result["keyword"] is None


async def test_stop_suppresses_confirms_once_and_start_resubscribes(sms_hub: Hub) -> None:
    number = "+4915199990000"
    await _customer(sms_hub, [number])
    await receive_sms(sms_hub, _mo("Stop!", gid="s1"))
    await receive_sms(sms_hub, _mo("Stop!", gid="s1"))  # the gateway delivered it twice
    async with sms_hub.sessions() as session:
        assert await is_suppressed(session, "sms", number)
    assert [s.text for s in gw(sms_hub).sent] == [sms_hub.config.sms.stop_reply]
    with pytest.raises(SmsSuppressed):
        await send_sms(sms_hub, to=number, text="Sale", marketing=True)
    await send_sms(sms_hub, to=number, text="Your order shipped")  # not marketing: allowed

    await receive_sms(sms_hub, _mo("start", gid="s2"))
    async with sms_hub.sessions() as session:
        assert not await is_suppressed(session, "sms", number)
    assert gw(sms_hub).sent[-1].text == sms_hub.config.sms.start_reply
    await send_sms(sms_hub, to=number, text="Sale", marketing=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("STOP", "stop"),
        (" stop. ", "stop"),
        ("Unsubscribe", "stop"),
        ("start", "start"),
        ("please stop sending", None),
        ("", None),
        ("STOPP", None),
    ],
)
def test_keywords(text: str, expected: str | None) -> None:
    config = Config()
    assert keyword_of(text, config.sms.stop_words, config.sms.start_words) == expected
