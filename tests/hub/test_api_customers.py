"""The customers HTTP API on the real app: auth, roles, error shapes, paging, CSRF."""

from __future__ import annotations

from tests.conftest import add_user, bearer


async def error_of(resp, status: int) -> dict:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert set(body) == {"error"}
    assert {"code", "message"} <= set(body["error"])
    return body["error"]


async def test_auth_is_required_and_checked(client, hub):
    await error_of(await client.get("/api/v1/customers"), 401)
    error = await error_of(
        await client.get("/api/v1/customers", headers=bearer("chub_not-a-token")), 401
    )
    assert error["code"] == "unauthenticated"
    await error_of(await client.post("/api/v1/customers", json={"name": "x"}), 401)


async def test_roles(client, hub):
    agent = await add_user(hub, "ann", "agent")
    marketer = await add_user(hub, "mia", "marketer")
    supervisor = await add_user(hub, "sam", "supervisor")
    resp = await client.post("/api/v1/customers", json={"name": "Max"}, headers=bearer(agent))
    assert resp.status == 201
    cid = (await resp.json())["id"]
    resp = await client.get(f"/api/v1/customers/{cid}", headers=bearer(marketer))
    assert resp.status == 200
    card = await resp.json()
    assert card["name"] == "Max" and card["last_interactions"] == []
    error = await error_of(
        await client.delete(f"/api/v1/customers/{cid}", headers=bearer(agent)), 403
    )
    assert error["code"] == "forbidden"
    resp = await client.delete(f"/api/v1/customers/{cid}", headers=bearer(supervisor))
    assert resp.status == 200 and (await resp.json()) == {"deleted": cid}
    await error_of(await client.get(f"/api/v1/customers/{cid}", headers=bearer(agent)), 404)


async def test_error_shapes(client, hub):
    token = await add_user(hub, "ann", "agent")
    headers = bearer(token)
    error = await error_of(
        await client.post(
            "/api/v1/customers", json={"name": "X", "phones": ["abc"]}, headers=headers
        ),
        400,
    )
    assert error["code"] == "invalid" and error["field"] == "phone"
    error = await error_of(
        await client.post(
            "/api/v1/customers",
            data="{not json",
            headers={**headers, "Content-Type": "application/json"},
        ),
        400,
    )
    assert error["code"] == "bad_json"
    error = await error_of(
        await client.post("/api/v1/customers", json=["a", "list"], headers=headers), 400
    )
    assert error["code"] == "bad_json"
    error = await error_of(await client.get("/api/v1/customers/999", headers=headers), 404)
    assert error["code"] == "not_found" and "999" in error["message"]
    error = await error_of(await client.get("/api/v1/customers/abc", headers=headers), 400)
    assert error["field"] == "id"
    error = await error_of(
        await client.get("/api/v1/customers", params={"limit": "many"}, headers=headers), 400
    )
    assert error["field"] == "limit"
    error = await error_of(
        await client.get("/api/v1/customers", params={"cursor": "@@@"}, headers=headers), 400
    )
    assert error["field"] == "cursor"
    await error_of(
        await client.patch("/api/v1/customers/999", json={"name": "x"}, headers=headers), 404
    )


async def test_paging_with_the_cursor(client, hub):
    token = await add_user(hub, "ann", "agent")
    headers = bearer(token)
    names = [f"Kunde {i:02d}" for i in range(7)]
    for name in reversed(names):
        resp = await client.post("/api/v1/customers", json={"name": name}, headers=headers)
        assert resp.status == 201
    seen: list[str] = []
    params = {"limit": "3"}
    pages = 0
    while True:
        resp = await client.get("/api/v1/customers", params=params, headers=headers)
        body = await resp.json()
        assert set(body) == {"items", "next"}
        seen += [c["name"] for c in body["items"]]
        pages += 1
        if body["next"] is None:
            break
        params = {"limit": "3", "cursor": body["next"]}
    assert seen == names and pages == 3
    resp = await client.get(
        "/api/v1/customers", params={"order": "desc", "limit": "2"}, headers=headers
    )
    assert [c["name"] for c in (await resp.json())["items"]] == names[::-1][:2]


async def test_patch_merge_and_timeline(client, hub):
    token = await add_user(hub, "ann", "agent")
    headers = bearer(token)
    a = await (
        await client.post(
            "/api/v1/customers", json={"name": "A", "phones": ["030 123456"]}, headers=headers
        )
    ).json()
    b = await (
        await client.post(
            "/api/v1/customers", json={"name": "B", "emails": ["b@example.com"]}, headers=headers
        )
    ).json()
    resp = await client.patch(
        f"/api/v1/customers/{a['id']}", json={"company": "ACME", "tags": ["Lead"]}, headers=headers
    )
    assert resp.status == 200
    assert (await resp.json())["company"] == "ACME"
    resp = await client.post(
        f"/api/v1/customers/{a['id']}/merge", json={"other_id": b["id"]}, headers=headers
    )
    merged = await resp.json()
    assert resp.status == 200 and merged["emails"] == [{"value": "b@example.com", "label": ""}]
    await error_of(await client.get(f"/api/v1/customers/{b['id']}", headers=headers), 404)
    resp = await client.get("/api/v1/customers", params={"email": "B@example.com"}, headers=headers)
    assert [c["id"] for c in (await resp.json())["items"]] == [a["id"]]
    resp = await client.get(f"/api/v1/customers/{a['id']}/timeline", headers=headers)
    assert resp.status == 200 and await resp.json() == {"items": [], "next": None}


async def test_session_cookie_needs_csrf_for_changes(client, hub):
    await add_user(hub, "ann", "agent")
    resp = await client.post(
        "/api/v1/session", json={"username": "ann", "password": "correct horse battery"}
    )
    assert resp.status == 200
    csrf = (await resp.json())["csrf_token"]
    resp = await client.get("/api/v1/customers")
    assert resp.status == 200  # cookie is enough to read
    error = await error_of(await client.post("/api/v1/customers", json={"name": "X"}), 403)
    assert error["code"] == "csrf"
    resp = await client.post(
        "/api/v1/customers", json={"name": "X"}, headers={"X-CSRF-Token": csrf}
    )
    assert resp.status == 201
    await error_of(
        await client.post(
            "/api/v1/session", json={"username": "ann", "password": "wrong password!"}
        ),
        401,
    )
