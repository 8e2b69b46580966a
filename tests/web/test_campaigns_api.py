"""The campaigns API through the real app: templates refused at save, live counts, preview,
send now through a real SMTP server, progress over HTTP and the websocket, unsubscribe links."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from connectors.smtp import SmtpSender
from hub.campaigns.consent import make_token
from hub.campaigns.engine import CampaignEngine
from hub.campaigns.messengers import EmailMessenger, MessengerRegistry
from hub.config import SmtpConfig
from hub.consent import is_suppressed
from tests.conftest import add_user, bearer
from tests.hub.campaigns.helpers import MemorySink, smtp_server

TEMPLATE = {
    "name": "spring",
    "channel": "email",
    "subject": "Spring for {{ customer.first_name }}",
    "html": "<p>Hello {{ customer.name }}</p>",
    "text": "Hello {{ customer.name }}\n{{ unsubscribe_url }}",
}


@pytest.fixture
async def marketer(hub) -> dict[str, str]:
    return bearer(await add_user(hub, "mia", "marketer"))


@pytest.fixture
async def mail(hub, tmp_path: Path) -> AsyncIterator[MemorySink]:
    """The campaign engine in hub.parts, sending into a real SMTP server."""
    record = MemorySink()
    async with smtp_server(record) as port:
        sender = SmtpSender(
            SmtpConfig(host="127.0.0.1", port=port, from_address="news@shop.test"),
            max_attempts=1,
            local_hostname="test.local",
        )
        registry = MessengerRegistry()
        registry.register(EmailMessenger(sender))
        engine = CampaignEngine(
            hub, registry, journal_dir=str(tmp_path / "journal"), tick_seconds=0.2
        )
        await engine.start()
        hub.parts["campaigns"] = engine
        try:
            yield record
        finally:
            await engine.stop()
            await sender.close()


async def post(client, path, body, headers, status=200):
    resp = await client.post(path, json=body, headers=headers)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def customers(client, headers):
    ids = []
    for name, email, source in [
        ("Anna <b>A</b>", "anna@x.test", "web"),
        ("Bert B", "bert@x.test", "fair"),
        ("Cara C", None, "web"),
    ]:
        body = {"name": name, "source": source, **({"emails": [email]} if email else {})}
        ids.append((await post(client, "/api/v1/customers", body, headers, 201))["id"])
    return ids


async def test_roles(client, hub):
    agent = bearer(await add_user(hub, "al", "agent"))
    assert (await client.get("/api/v1/campaigns")).status == 401
    assert (await client.get("/api/v1/campaigns", headers=agent)).status == 403
    admin = bearer(await add_user(hub, "ada", "admin"))
    assert (await client.get("/api/v1/campaigns", headers=admin)).status == 200


async def test_template_with_errors_is_refused_at_save(client, marketer):
    resp = await client.post(
        "/api/v1/templates",
        json={**TEMPLATE, "text": "Hello\n{{ customer.nmae }}"},
        headers=marketer,
    )
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert (error["code"], error["part"], error["line"], error["name"]) == (
        "invalid_template",
        "text",
        2,
        "customer.nmae",
    )
    resp = await client.post(
        "/api/v1/templates", json={**TEMPLATE, "html": "<p>{% for x in %}</p>"}, headers=marketer
    )
    error = (await resp.json())["error"]
    assert resp.status == 400 and error["part"] == "html" and error["line"] == 1
    created = await post(client, "/api/v1/templates", TEMPLATE, marketer, 201)
    resp = await client.patch(
        f"/api/v1/templates/{created['id']}", json={"subject": "{{ nope }}"}, headers=marketer
    )
    assert resp.status == 400 and (await resp.json())["error"]["name"] == "nope"
    again = await (await client.get(f"/api/v1/templates/{created['id']}", headers=marketer)).json()
    assert again["subject"] == TEMPLATE["subject"]  # nothing stored


async def test_segment_live_count_and_refusal(client, marketer):
    await customers(client, marketer)
    count = await post(
        client,
        "/api/v1/segments/count",
        {"filter": {"field": "source", "op": "eq", "value": "web"}},
        marketer,
    )
    assert count == {"count": 2}
    resp = await client.post(
        "/api/v1/segments",
        json={"name": "bad", "filter": {"all": [{"field": "source", "op": "like", "value": "%"}]}},
        headers=marketer,
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["field"] == "filter.all[0].op"
    seg = await post(
        client,
        "/api/v1/segments",
        {"name": "emails", "filter": {"field": "has_email", "op": "is", "value": True}},
        marketer,
        201,
    )
    resp = await client.get(f"/api/v1/segments/{seg['id']}/count", headers=marketer)
    assert await resp.json() == {"count": 2}


async def test_campaign_from_api_to_inbox(client, hub, marketer, mail):
    anna, _bert, _cara = await customers(client, marketer)
    template = await post(client, "/api/v1/templates", TEMPLATE, marketer, 201)
    segment = await post(
        client,
        "/api/v1/segments",
        {"name": "all", "filter": {}},
        marketer,
        201,
    )
    campaign = await post(
        client,
        "/api/v1/campaigns",
        {
            "name": "Spring",
            "channel": "email",
            "template_id": template["id"],
            "segment_id": segment["id"],
        },
        marketer,
        201,
    )
    cid = campaign["id"]
    preview = await post(
        client, f"/api/v1/campaigns/{cid}/preview", {"customer_id": anna}, marketer
    )
    assert preview["subject"] == "Spring for Anna"
    assert preview["html"] == "<p>Hello Anna &lt;b&gt;A&lt;/b&gt;</p>"

    ws = await client.ws_connect("/ws", params={"token": marketer["Authorization"][7:]})
    assert (await ws.receive_json())["type"] == "hello"
    started = await post(client, f"/api/v1/campaigns/{cid}/schedule", {"now": True}, marketer)
    assert started["run_id"] and started["campaign"]["status"] == "running"

    async def finished():
        body = await (
            await client.get(f"/api/v1/campaigns/{cid}/progress", headers=marketer)
        ).json()
        return body["runs"][0]["status"] == "finished" and body

    async with asyncio.timeout(30):
        while not (progress := await finished()):
            await asyncio.sleep(0.05)
    run = progress["runs"][0]
    assert (run["sent"], run["skipped"], run["queued"], run["total"]) == (2, 1, 0, 3)
    assert progress["status"] == "finished"
    assert sorted(mail.by_rcpt()) == ["anna@x.test", "bert@x.test"]

    seen = []
    async with asyncio.timeout(10):
        while not seen or seen[-1]["status"] != "finished":
            event = await ws.receive_json()
            if event["type"] == "campaign.progress":
                seen.append(event)
    assert seen[-1]["campaign_id"] == cid and seen[-1]["sent"] == 2
    await ws.close()

    report = await (await client.get(f"/api/v1/campaigns/{cid}/report", headers=marketer)).json()
    assert report["totals"]["sent"] == 2
    assert {row["source"] for row in report["by_source"]} == {"web", "fair"}

    test = await post(client, f"/api/v1/campaigns/{cid}/test", {"to": "Boss@Shop.test"}, marketer)
    assert test["to"] == "boss@shop.test"
    message = message_from_bytes(mail.received[-1].data, policy=policy.default)
    assert message["Subject"] == "[TEST] Spring for Erika"

    # Unsubscribe from the link in Anna's message, one-click as a mail client does it.
    anna_mail = next(r for r in mail.received if r.rcpt == "anna@x.test")
    parsed = message_from_bytes(anna_mail.data, policy=policy.default)
    url = parsed["List-Unsubscribe"].strip("<>")
    path = url[url.index("/u/") :]
    page = await client.get(path)
    assert page.status == 200 and "an**@x.test" in await page.text()
    async with hub.sessions() as session:
        assert not await is_suppressed(session, "email", "anna@x.test")  # GET never unsubscribes
    resp = await client.post(
        path,
        data="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 200
    async with hub.sessions() as session:
        assert await is_suppressed(session, "email", "anna@x.test")
    report = await (await client.get(f"/api/v1/campaigns/{cid}/report", headers=marketer)).json()
    assert report["totals"]["unsubscribed"] == 1


async def test_forged_unsubscribe_link_changes_nothing(client, hub, marketer):
    anna, *_ = await customers(client, marketer)
    secret = hub.config.web.secret_key
    token = make_token(secret, channel="email", customer_id=anna, source="c1")
    forged = token.replace(f"email.{anna}.", f"email.{anna + 1}.")
    for path in (f"/u/{forged}", f"/u/{token[:-2]}xy", "/u/email.1.c1.AAAA"):
        assert (await client.get(path)).status == 404
        resp = await client.post(
            path,
            data="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert resp.status == 404
    assert (await client.get(f"/u/{token}/open.gif")).status == 404  # wrong purpose
    async with hub.sessions() as session:
        assert not await is_suppressed(session, "email", "anna@x.test")
    page = await client.get(f"/u/{token}")
    assert page.status == 200 and "Unsubscribe" in await page.text()
    assert page.headers["Cache-Control"] == "no-store"


async def test_pause_resume_cancel(client, marketer):
    template = await post(client, "/api/v1/templates", TEMPLATE, marketer, 201)
    campaign = await post(
        client,
        "/api/v1/campaigns",
        {"name": "Later", "channel": "email", "template_id": template["id"]},
        marketer,
        201,
    )
    cid = campaign["id"]
    resp = await client.post(f"/api/v1/campaigns/{cid}/resume", headers=marketer)
    assert resp.status == 400
    body = await post(
        client,
        f"/api/v1/campaigns/{cid}/schedule",
        {"cron": "0 9 * * *", "timezone": "Europe/Berlin"},
        marketer,
    )
    assert body["campaign"]["status"] == "scheduled"
    assert body["schedule"]["next_fire_at"].endswith(("07:00:00+00:00", "08:00:00+00:00"))
    paused = await post(client, f"/api/v1/campaigns/{cid}/pause", None, marketer)
    assert paused["status"] == "paused"
    resumed = await post(client, f"/api/v1/campaigns/{cid}/resume", None, marketer)
    assert resumed["status"] == "scheduled"
    cancelled = await post(client, f"/api/v1/campaigns/{cid}/cancel", {"reason": "typo"}, marketer)
    assert (cancelled["status"], cancelled["status_reason"]) == ("cancelled", "typo")
    assert cancelled["schedule"]["active"] is False
    resp = await client.post(
        f"/api/v1/campaigns/{cid}/schedule", json={"cron": "bad"}, headers=marketer
    )
    assert resp.status == 400


async def test_trigger_rules_crud(client, marketer):
    template = await post(
        client, "/api/v1/templates", {"name": "sms", "channel": "sms", "text": "Hi"}, marketer, 201
    )
    rule = await post(
        client,
        "/api/v1/triggers",
        {
            "name": "missed",
            "event": "call.missed",
            "channel": "sms",
            "template_id": template["id"],
            "dedupe": "day",
        },
        marketer,
        201,
    )
    assert rule["dedupe"] == "day" and rule["active"] is True
    resp = await client.patch(
        f"/api/v1/triggers/{rule['id']}", json={"active": False}, headers=marketer
    )
    assert (await resp.json())["active"] is False
    resp = await client.post(
        "/api/v1/triggers",
        json={"name": "x", "event": "no_contact", "channel": "sms", "template_id": template["id"]},
        headers=marketer,
    )
    assert resp.status == 400 and (await resp.json())["error"]["field"] == "days"
    listed = await (await client.get("/api/v1/triggers", headers=marketer)).json()
    assert [r["name"] for r in listed["items"]] == ["missed"]
    assert json.dumps(listed)
