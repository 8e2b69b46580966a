"""SMS webhooks through the real app: 401/403 without the right secret or signature, 400 (logged)
for malformed payloads, never a 500; Kannel-shaped callbacks decoded (UCS-2 included)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from connectors.sms import http_json, kannel
from hub.models.sms import SmsMessage
from hub.services import Hub
from hub.sms.registry import GatewayContext
from hub.sms.service import send_sms

Client = TestClient[web.Request, web.Application]
SECRET = "test-webhook-secret"


@pytest.fixture
def kannel_gateway(hub: Hub) -> kannel.KannelGateway:
    """Kannel as the configured gateway (these tests only receive callbacks)."""
    gateway = kannel.create(GatewayContext(config=hub.config, settings={"username": "commhub"}))
    hub.parts["sms"] = gateway
    return gateway


async def _rows(hub: Hub) -> list[SmsMessage]:
    async with hub.sessions() as session:
        return list((await session.scalars(select(SmsMessage).order_by(SmsMessage.id))).all())


async def test_missing_credentials_401_wrong_403(
    client: Client, kannel_gateway: kannel.KannelGateway
) -> None:
    for path in ("/hooks/sms/kannel/inbound", "/hooks/sms/kannel/dlr"):
        resp = await client.get(f"{path}?from=%2B4915111112222&text=hi")
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "unauthenticated"
        resp = await client.get(f"{path}?secret=nope&from=%2B4915111112222&text=hi")
        assert resp.status == 403
        resp = await client.post(path, data=b"{}", headers={"X-Commhub-Signature": "sha256=00"})
        assert resp.status == 403
    assert await _rows(kannel_hub(client)) == []


def kannel_hub(client: Client) -> Hub:
    """The Hub behind the test client's app."""
    from web.keys import HUB

    assert client.app is not None
    return client.app[HUB]


async def test_no_secret_configured_refuses_everything(
    client: Client, kannel_gateway: kannel.KannelGateway
) -> None:
    from dataclasses import replace

    hub = kannel_hub(client)
    hub.config = replace(hub.config, sms=replace(hub.config.sms, webhook_secret=""))
    resp = await client.get("/hooks/sms/kannel/inbound?secret=&from=1&text=x")
    assert resp.status == 401
    resp = await client.get("/hooks/sms/kannel/inbound?secret=anything&from=1&text=x")
    assert resp.status == 403


async def test_unknown_or_unconfigured_gateway_is_404(
    client: Client, kannel_gateway: kannel.KannelGateway
) -> None:
    resp = await client.get(f"/hooks/sms/smpp/inbound?secret={SECRET}&from=1&text=x")
    assert resp.status == 404
    kannel_hub(client).parts.pop("sms")
    resp = await client.get(f"/hooks/sms/kannel/inbound?secret={SECRET}&from=1&text=x")
    assert resp.status == 404


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("inbound", "text=hello"),  # no sender
        ("inbound", "from=%2B4915111112222"),  # no text
        ("inbound", "from=%2B4915111112222&text=%04&coding=2&charset=UTF-16BE"),  # odd UCS-2
        ("inbound", "from=%2B4915111112222&text=x&ts=yesterday"),
        ("dlr", "status=1"),  # no ref
        ("dlr", "ref=abc&status=delivered"),  # not Kannel's %d
        ("dlr", "ref=abc&status=3"),  # no such report type
        ("dlr", f"ref={'x' * 300}&status=1"),
    ],
)
async def test_malformed_payloads_are_400_and_logged(
    client: Client,
    kannel_gateway: kannel.KannelGateway,
    caplog: pytest.LogCaptureFixture,
    path: str,
    query: str,
) -> None:
    with caplog.at_level(logging.WARNING, logger="web.routes.sms"):
        resp = await client.get(f"/hooks/sms/kannel/{path}?secret={SECRET}&{query}")
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"]["code"] == "malformed"
    assert any("malformed payload" in r.getMessage() for r in caplog.records)
    assert SECRET not in caplog.text


async def test_kannel_mo_in_ucs2_and_utf8_is_decoded_and_stored(
    client: Client, kannel_gateway: kannel.KannelGateway
) -> None:
    ucs2 = quote("Привет 😀 & +".encode("utf-16-be"), safe="").replace("%20", "+")
    resp = await client.get(
        f"/hooks/sms/kannel/inbound?secret={SECRET}&from=%2B4915111112222&to=12345"
        f"&text={ucs2}&coding=2&charset=UTF-16BE&id=k-1&ts=1795350973"
    )
    assert resp.status == 200, await resp.text()
    resp = await client.get(
        f"/hooks/sms/kannel/inbound?secret={SECRET}&from=%2B4915111112222&to=12345"
        f"&text=Gr%C3%BC%C3%9Fe+%26+50%25&coding=0&charset=UTF-8&id=k-2"
    )
    assert resp.status == 200
    again = await client.get(
        f"/hooks/sms/kannel/inbound?secret={SECRET}&from=%2B4915111112222&to=12345"
        f"&text=Gr%C3%BC%C3%9Fe+%26+50%25&coding=0&charset=UTF-8&id=k-2"
    )
    assert (await again.json())["received"][0]["duplicate"] is True
    rows = await _rows(kannel_hub(client))
    assert [(r.text, r.direction, r.reference) for r in rows] == [
        ("Привет 😀 & +", "in", "kannel:k-1"),
        ("Grüße & 50%", "in", "kannel:k-2"),
    ]
    assert rows[0].created_at.timestamp() == 1795350973


async def test_kannel_dlr_failure_and_unknown_reference(
    client: Client, kannel_gateway: kannel.KannelGateway
) -> None:
    hub = kannel_hub(client)
    async with hub.sessions() as session, session.begin():
        session.add(
            SmsMessage(
                reference="ref-1",
                direction="out",
                gateway="kannel",
                gateway_id="ref-1",
                to_number="+4915111112222",
                from_number="commhub",
                text="x",
                encoding="gsm7",
                segments=1,
                cost=0.0,
                marketing=False,
                source="test",
                status="sent",
                history=[],
                error="",
            )
        )
    resp = await client.get(
        f"/hooks/sms/kannel/dlr?secret={SECRET}&ref=ref-1&status=16&answer=NACK%2F0x0000000b"
    )
    assert (await resp.json()) == {"reports": ["applied"]}
    resp = await client.get(f"/hooks/sms/kannel/dlr?secret={SECRET}&ref=ref-1&status=1")
    assert (await resp.json()) == {"reports": ["duplicate"]}  # the first final word stands
    resp = await client.get(f"/hooks/sms/kannel/dlr?secret={SECRET}&ref=nobody&status=1")
    assert (await resp.json()) == {"reports": ["pending"]}
    (row,) = await _rows(hub)
    assert (row.status, row.error) == ("failed", "DLR 16: NACK/0x0000000b")


# --- the generic HTTP/JSON provider: signed callbacks, and the one-off send API ---


@pytest.fixture
async def provider(hub: Hub) -> AsyncIterator[list[dict[str, Any]]]:
    """A JSON SMS provider on loopback (records requests) configured as the "http" gateway."""
    received: list[dict[str, Any]] = []

    async def messages(request: web.Request) -> web.Response:
        body = await request.json()
        received.append({"auth": request.headers.get("X-Api-Key"), **body})
        if body["destination"] == "+4915100000000":
            return web.json_response({"error": "blocked"}, status=422)
        return web.json_response({"result": {"messages": [{"msg_id": f"p-{len(received)}"}]}})

    app = web.Application()
    app.router.add_post("/v1/sms", messages)
    server = TestServer(app)
    await server.start_server()
    gateway = http_json.create(
        GatewayContext(
            config=hub.config,
            settings={
                "url": str(server.make_url("/v1/sms")),
                "auth_header": "X-Api-Key",
                "auth_value": "k123",
                "to_field": "destination",
                "text_field": "body",
                "reference_field": "client_ref",
                "id_path": "result.messages.0.msg_id",
                "inbound": {"from": "msisdn", "text": "message.text", "id": "message_id"},
                "report": {"id": "msg_id", "status": "state", "statuses": {"DLVRD": "delivered"}},
            },
        )
    )
    hub.parts["sms"] = gateway
    yield received
    await gateway.close()
    await server.close()


def _signed(body: dict[str, Any] | list[Any], secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    sig = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return raw, {"X-Commhub-Signature": f"sha256={sig}", "Content-Type": "application/json"}


async def test_signed_json_callbacks(client: Client, provider: list[dict[str, Any]]) -> None:
    hub = kannel_hub(client)
    sent = await send_sms(hub, to="+4915111112222", text="hi")
    assert sent["gateway_id"] == "p-1"
    assert provider[0] == {
        "auth": "k123",
        "destination": "+4915111112222",
        "body": "hi",
        "from": "commhub",
        "client_ref": sent["reference"],
    }
    raw, headers = _signed([{"msg_id": "p-1", "state": "DLVRD"}])
    resp = await client.post("/hooks/sms/http/dlr", data=raw, headers=headers)
    assert (await resp.json()) == {"reports": ["applied"]}
    raw, headers = _signed(
        {"msisdn": "+4915111112222", "message": {"text": "thx"}, "message_id": 7}
    )
    resp = await client.post("/hooks/sms/http/inbound", data=raw, headers=headers)
    assert resp.status == 200
    # The same body signed with another secret, or tampered with after signing: 403.
    raw, headers = _signed({"msisdn": "+4915111112222", "message": {"text": "x"}}, secret="other")
    assert (await client.post("/hooks/sms/http/inbound", data=raw, headers=headers)).status == 403
    raw, headers = _signed({"msisdn": "+4915111112222", "message": {"text": "x"}})
    tampered = raw.replace(b"x", b"y")
    resp = await client.post("/hooks/sms/http/inbound", data=tampered, headers=headers)
    assert resp.status == 403
    # Signed but malformed: 400.
    for body in ([{"msg_id": "p-1", "state": "WHAT"}], {"state": "DLVRD"}, [1, 2]):
        raw, headers = _signed(body)
        assert (await client.post("/hooks/sms/http/dlr", data=raw, headers=headers)).status == 400
    raw = b"{not json"
    sig = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    resp = await client.post("/hooks/sms/http/dlr", data=raw, headers={"X-Commhub-Signature": sig})
    assert resp.status == 400
    rows = await _rows(hub)
    assert [(r.direction, r.status, r.text) for r in rows] == [
        ("out", "delivered", "hi"),
        ("in", "received", "thx"),
    ]


async def test_send_api_and_preview(client: Client, provider: list[dict[str, Any]]) -> None:
    from tests.conftest import add_user, bearer

    hub = kannel_hub(client)
    agent = bearer(await add_user(hub, "agnes", "agent"))
    marketer = bearer(await add_user(hub, "mark", "marketer"))
    resp = await client.post(
        "/api/v1/customers", json={"name": "Cy", "phones": ["0151 2222 3333"]}, headers=agent
    )
    customer_id = (await resp.json())["id"]

    resp = await client.post(
        "/api/v1/messages/sms",
        json={"customer_id": customer_id, "text": "Добрый день! " * 6},
        headers=agent,
    )
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert (body["to"], body["status"], body["encoding"], body["segments"]) == (
        "+4915122223333",
        "sent",
        "ucs2",
        2,
    )
    assert body["info"]["per_segment"] == 67 and body["customer_id"] == customer_id
    resp = await client.get(f"/api/v1/customers/{customer_id}/timeline", headers=agent)
    items = (await resp.json())["items"]
    assert [(i["channel"], i["status"]) for i in items] == [("sms", "sent")]

    resp = await client.post(
        "/api/v1/messages/sms", json={"to": "+4915100000000", "text": "x"}, headers=agent
    )
    assert resp.status == 502  # the provider refused it for good
    resp = await client.post("/api/v1/messages/sms", json={"to": "12", "text": "x"}, headers=agent)
    assert resp.status == 400
    resp = await client.post(
        "/api/v1/messages/sms", json={"customer_id": 999, "text": "x"}, headers=agent
    )
    assert resp.status == 404
    resp = await client.post("/api/v1/messages/sms", json={"to": "+4915122223333"}, headers=agent)
    assert resp.status == 400
    resp = await client.post(
        "/api/v1/messages/sms", json={"to": "+4915122223333", "text": "x"}, headers=marketer
    )
    assert resp.status == 403
    resp = await client.post("/api/v1/messages/sms", json={"to": "+4915122223333", "text": "x"})
    assert resp.status == 401

    resp = await client.post(
        "/api/v1/messages/sms/preview", json={"text": "a" * 161}, headers=marketer
    )
    assert (await resp.json())["segments"] == 2
    hub.parts.pop("sms")
    resp = await client.post(
        "/api/v1/messages/sms", json={"to": "+4915122223333", "text": "x"}, headers=agent
    )
    assert resp.status == 503
