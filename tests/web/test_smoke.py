"""The app answers: health, auth required, token and session login, customers round trip."""

from __future__ import annotations

from tests.conftest import add_user, bearer


async def test_health_is_public(client):
    resp = await client.get("/health")
    assert resp.status == 200
    assert (await resp.json())["database"] == "ok"


async def test_api_requires_auth(client):
    resp = await client.get("/api/v1/customers")
    assert resp.status == 401
    body = await resp.json()
    assert body["error"]["code"] == "unauthenticated"


async def test_customer_round_trip_with_token(client, hub):
    token = await add_user(hub, "ann", "agent", extension="201", devices=("PJSIP/201",))
    resp = await client.post(
        "/api/v1/customers",
        json={
            "name": "Max Mustermann",
            "company": "ACME",
            "phones": ["030 123456"],
            "tags": ["VIP"],
        },
        headers=bearer(token),
    )
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["phones"] == [{"value": "+4930123456", "label": ""}]
    assert created["tags"] == ["vip"]
    resp = await client.get(
        "/api/v1/customers", params={"phone": "+49 30 123456"}, headers=bearer(token)
    )
    items = (await resp.json())["items"]
    assert [c["id"] for c in items] == [created["id"]]
