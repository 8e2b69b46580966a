"""POST /api/v1/messages/email and GET /api/v1/messages/{id} through the real app and an SMTP sink."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from connectors.smtp import SmtpSender
from hub.config import SmtpConfig
from hub.consent import is_suppressed, suppress
from hub.mail.inbound import InboundMail
from hub.mail.ports import MailRef
from hub.models.campaigns import MessageTemplate
from hub.models.interactions import Interaction
from hub.services import Hub
from tests.conftest import add_user, bearer
from tests.connectors.smtp.sink import Sink, smtp_sink

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mail"


@pytest.fixture
async def sink(hub: Hub) -> AsyncIterator[Sink]:
    """An SMTP sink in this loop, wired as hub.parts["email"]."""
    async with smtp_sink() as (record, port):
        sender = SmtpSender(
            SmtpConfig(host="127.0.0.1", port=port, from_address="Support <support@example.test>"),
            backoff_base=0.01,
            local_hostname="hub.test",
        )
        hub.parts["email"] = sender
        hub.config = replace(hub.config, smtp=sender.config)
        yield record
        await sender.close()


@pytest.fixture
async def agent(hub: Hub) -> dict[str, str]:
    """Bearer headers of an agent."""
    return bearer(await add_user(hub, "ann", "agent"))


async def new_customer(client: TestClient[Any, Any], headers: dict[str, str], email: str) -> int:
    resp = await client.post(
        "/api/v1/customers", json={"name": "Max Muster", "emails": [email]}, headers=headers
    )
    assert resp.status == 201, await resp.text()
    return int((await resp.json())["id"])


async def test_send_from_the_customer_card(
    client: TestClient[Any, Any], sink: Sink, agent: dict[str, str]
) -> None:
    customer_id = await new_customer(client, agent, "max@customer.example")
    resp = await client.post(
        "/api/v1/messages/email",
        json={
            "customer_id": customer_id,
            "subject": "Your offer",
            "text": "Hello Max,\nhere it is.",
            "html": "<p>Hello Max,</p><p>here it is.</p>",
        },
        headers=agent,
    )
    assert resp.status == 201, await resp.text()
    sent = await resp.json()
    assert sent["to"] == ["max@customer.example"]
    assert (sent["status"], sent["direction"], sent["customer_id"]) == (
        "sent",
        "outbound",
        customer_id,
    )
    [delivery] = sink.deliveries
    msg = delivery.parsed()
    assert msg["Message-ID"] == sent["message_id"]
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["From"].addresses[0].addr_spec == "support@example.test"
    # It is in the customer's timeline, with the link to the full body.
    resp = await client.get(f"/api/v1/customers/{customer_id}/timeline", headers=agent)
    [item] = (await resp.json())["items"]
    assert (item["channel"], item["direction"], item["status"]) == ("email", "outbound", "sent")
    assert item["summary"] == "Your offer"
    assert item["data"]["snippet"] == "Hello Max, here it is."
    resp = await client.get(item["data"]["url"], headers=agent)
    full = await resp.json()
    assert full["text"] == "Hello Max,\nhere it is." and "<p>Hello Max,</p>" in full["html"]


async def test_reply_threads_in_the_customers_mail_client(
    client: TestClient[Any, Any], hub: Hub, sink: Sink, agent: dict[str, str], tmp_path: Path
) -> None:
    customer_id = await new_customer(client, agent, "anna.schmidt@kunde.example")
    inbound = InboundMail(hub.sessions, attachments_dir=tmp_path)
    await inbound.deliver(MailRef("acct", "INBOX", 1, 1), (FIXTURES / "plain.eml").read_bytes())
    async with hub.sessions() as session:
        row = await session.scalar(select(Interaction).where(Interaction.direction == "inbound"))
        assert row is not None
        email_id = row.data["email_id"]
    resp = await client.post(
        "/api/v1/messages/email",
        json={"in_reply_to": email_id, "text": "It ships tomorrow."},
        headers=agent,
    )
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["customer_id"] == customer_id
    assert body["to"] == ["anna.schmidt@kunde.example"]
    assert body["thread_key"] == "<20240514091158.abc123@kunde.example>"
    msg = sink.deliveries[0].parsed()
    assert msg["Subject"] == "Re: Question about my order"
    assert msg["In-Reply-To"] == "<20240514091158.abc123@kunde.example>"
    assert msg["References"] == "<20240514091158.abc123@kunde.example>"


async def test_send_from_a_template(
    client: TestClient[Any, Any], hub: Hub, sink: Sink, agent: dict[str, str]
) -> None:
    customer_id = await new_customer(client, agent, "max@customer.example")
    async with hub.sessions() as session, session.begin():
        session.add(
            MessageTemplate(
                name="welcome",
                channel="email",
                subject="Welcome, {{ customer.first_name }}",
                text="Dear {{ customer.name }},\nwelcome!",
                html="<p>Dear {{ customer.name }}</p>",
            )
        )
    resp = await client.post(
        "/api/v1/messages/email",
        json={"customer_id": customer_id, "template": "welcome"},
        headers=agent,
    )
    assert resp.status == 201, await resp.text()
    msg = sink.deliveries[0].parsed()
    assert msg["Subject"] == "Welcome, Max"
    plain = msg.get_body(("plain",))
    assert plain is not None and plain.get_content().startswith("Dear Max Muster,\nwelcome!")
    resp = await client.post(
        "/api/v1/messages/email",
        json={"customer_id": customer_id, "template": "nope"},
        headers=agent,
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["field"] == "template"


async def test_permanent_refusal_is_logged_suppressed_and_502(
    client: TestClient[Any, Any], hub: Hub, sink: Sink, agent: dict[str, str]
) -> None:
    sink.rcpt_replies.append("550 5.1.1 no such user")
    resp = await client.post(
        "/api/v1/messages/email",
        json={"to": "gone@customer.example", "subject": "Hi", "text": "x"},
        headers=agent,
    )
    assert resp.status == 502
    assert "550 5.1.1" in (await resp.json())["error"]["message"]
    async with hub.sessions() as session:
        assert await is_suppressed(session, "email", "gone@customer.example")
        row = await session.scalar(select(Interaction))
        assert row is not None and row.status == "failed"
    # Sending again is refused before any SMTP traffic.
    resp = await client.post(
        "/api/v1/messages/email",
        json={"to": "gone@customer.example", "subject": "Hi", "text": "x"},
        headers=agent,
    )
    assert resp.status == 400
    assert "bounced" in (await resp.json())["error"]["message"]
    assert sink.rcpt_commands == 1


async def test_unsubscribed_address_still_gets_one_off_mail(
    client: TestClient[Any, Any], hub: Hub, sink: Sink, agent: dict[str, str]
) -> None:
    async with hub.sessions() as session, session.begin():
        await suppress(session, "email", "max@customer.example", "unsubscribed")
    resp = await client.post(
        "/api/v1/messages/email",
        json={"to": "max@customer.example", "subject": "Your ticket", "text": "Answer."},
        headers=agent,
    )
    assert resp.status == 201
    assert len(sink.deliveries) == 1


async def test_temporary_failure_is_503_and_not_logged(
    client: TestClient[Any, Any], hub: Hub, sink: Sink, agent: dict[str, str]
) -> None:
    sink.data_replies.extend(["451 4.3.0 later"] * 10)
    resp = await client.post(
        "/api/v1/messages/email",
        json={"to": "max@customer.example", "subject": "Hi", "text": "x"},
        headers=agent,
    )
    assert resp.status == 503
    async with hub.sessions() as session:
        assert await session.scalar(select(Interaction)) is None


async def test_validation_roles_and_configuration(
    client: TestClient[Any, Any], hub: Hub, agent: dict[str, str]
) -> None:
    marketer = bearer(await add_user(hub, "mia", "marketer"))
    body = {"to": "max@customer.example", "subject": "Hi", "text": "x"}
    resp = await client.post("/api/v1/messages/email", json=body, headers=marketer)
    assert resp.status == 403
    resp = await client.post("/api/v1/messages/email", json=body, headers=agent)
    assert resp.status == 503  # no sender configured in this hub
    assert (await resp.json())["error"]["code"] == "not_configured"
    resp = await client.post("/api/v1/messages/email", json={"subject": "x"}, headers=agent)
    assert resp.status == 400
    resp = await client.post(
        "/api/v1/messages/email", json={**body, "to": "not an address"}, headers=agent
    )
    assert resp.status in (400, 503)
    resp = await client.get("/api/v1/messages/999", headers=agent)
    assert resp.status == 404


async def test_line_breaks_in_the_subject_cannot_inject_headers(
    client: TestClient[Any, Any], sink: Sink, agent: dict[str, str]
) -> None:
    resp = await client.post(
        "/api/v1/messages/email",
        json={"to": "max@customer.example", "subject": "Hi\r\nBcc: all@x.example", "text": "x"},
        headers=agent,
    )
    assert resp.status == 201
    [delivery] = sink.deliveries
    assert delivery.rcpt_tos == ["max@customer.example"]
    msg = delivery.parsed()
    assert msg["Bcc"] is None
    assert msg["Subject"] == "Hi Bcc: all@x.example"


async def test_full_body_and_attachment_download(
    client: TestClient[Any, Any], hub: Hub, agent: dict[str, str], tmp_path: Path
) -> None:
    inbound = InboundMail(hub.sessions, attachments_dir=hub.config.imap.attachments_dir)
    await inbound.deliver(
        MailRef("acct", "INBOX", 1, 1), (FIXTURES / "attachments.eml").read_bytes()
    )
    async with hub.sessions() as session:
        row = await session.scalar(select(Interaction))
        assert row is not None
    resp = await client.get(row.data["url"], headers=agent)
    assert resp.status == 200
    full = await resp.json()
    assert [a["name"] for a in full["attachments"]] == [
        "logo.png",
        "Rechnung März.pdf",
        "orders.csv",
    ]
    assert "path" not in full["attachments"][0]  # server paths stay on the server
    resp = await client.get(f"{row.data['url']}/attachments/1", headers=agent)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert "Rechnung%20M%C3%A4rz.pdf" in resp.headers["Content-Disposition"]
    assert (await resp.read()).startswith(b"%PDF-1.4")
    resp = await client.get(f"{row.data['url']}/attachments/7", headers=agent)
    assert resp.status == 404
