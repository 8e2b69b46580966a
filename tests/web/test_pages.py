"""Pages and their APIs over real HTTP: roles on every page, escaping, notes, audit, import."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import add_user, bearer

PASSWORD = "correct horse battery"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# page → roles that may open it (admin opens everything)
PAGES = {
    "/console": {"agent", "supervisor"},
    "/customers": {"agent", "supervisor", "marketer"},
    "/customers/new": {"agent", "supervisor", "marketer"},
    "/customers/merge": {"agent", "supervisor", "marketer"},
    "/customers/import": {"supervisor", "marketer"},
    "/marketing/campaigns": {"marketer"},
    "/marketing/segments": {"marketer"},
    "/marketing/templates": {"marketer"},
    "/supervisor/calls": {"supervisor"},
    "/supervisor/stats": {"supervisor"},
    "/supervisor/wallboard": {"supervisor"},
    "/admin/audit": {"supervisor"},
}


async def login(client: TestClient[Any, Any], username: str) -> str:
    """Log in with the JSON API (cookie lands in the client's jar); returns the CSRF token."""
    resp = await client.post("/api/v1/session", json={"username": username, "password": PASSWORD})
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["csrf_token"])


@pytest.fixture
async def people(hub: Any) -> dict[str, str]:
    """One user per role; returns their API tokens."""
    return {
        "anna": await add_user(hub, "anna", "agent", extension="201", devices=("PJSIP/201",)),
        "sam": await add_user(hub, "sam", "supervisor"),
        "mia": await add_user(hub, "mia", "marketer"),
        "root": await add_user(hub, "root", "admin"),
    }


ROLE_OF = {"anna": "agent", "sam": "supervisor", "mia": "marketer", "root": "admin"}


@pytest.mark.parametrize("username", sorted(ROLE_OF))
async def test_every_page_checks_the_role(client, people, username):
    await login(client, username)
    role = ROLE_OF[username]
    for path, roles in PAGES.items():
        resp = await client.get(path, allow_redirects=False)
        allowed = role == "admin" or role in roles
        body = await resp.text()
        assert resp.status == (200 if allowed else 403), (path, role, resp.status)
        assert resp.content_type == "text/html"
        if not allowed:
            assert "Not for your role" in body
        # Navigation shows only what the role may open.
        nav = re.findall(r'<nav aria-label="Main">(.*?)</nav>', body, re.S)[0]
        assert (f'href="{path}"' in nav) == (allowed and path in NAV_LINKS)


NAV_LINKS = {
    "/console",
    "/customers",
    "/marketing/campaigns",
    "/marketing/segments",
    "/marketing/templates",
    "/supervisor/wallboard",
    "/supervisor/calls",
    "/supervisor/stats",
    "/admin/audit",
}


async def test_anonymous_visitor_goes_to_login_and_home_goes_by_role(client, people):
    resp = await client.get("/supervisor/calls", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"].startswith("/login?next=")
    resp = await client.get("/login")
    assert resp.status == 200 and 'name="password"' in await resp.text()
    for username, target in (
        ("anna", "/console"),
        ("sam", "/supervisor/wallboard"),
        ("mia", "/marketing/campaigns"),
    ):
        await login(client, username)
        resp = await client.get("/", allow_redirects=False)
        assert resp.headers["Location"] == target


async def test_pages_escape_what_customers_write(client, people):
    evil = "<script>alert('x')</script>"
    resp = await client.post(
        "/api/v1/customers",
        json={"name": evil, "company": '"><img src=x onerror=alert(1)>', "tags": ["<b>t</b>"]},
        headers=bearer(people["anna"]),
    )
    assert resp.status == 201, await resp.text()
    customer_id = (await resp.json())["id"]
    resp = await client.post(
        f"/api/v1/customers/{customer_id}/notes",
        json={"text": "<script>document.title='owned'</script>"},
        headers=bearer(people["anna"]),
    )
    assert resp.status == 201
    await login(client, "sam")
    for path in (f"/customers/{customer_id}", "/customers", f"/customers/merge?keep={customer_id}"):
        html = await (await client.get(path)).text()
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>t</b>" not in html
        assert "&lt;script&gt;alert(" in html
    html = await (await client.get(f"/customers/{customer_id}")).text()
    assert "<script>document.title" not in html
    # The JSON island for the page's script cannot close its <script> element.
    island = re.search(
        r'<script type="application/json" id="customer-data">(.*?)</script>', html, re.S
    )
    assert island and "<" not in island.group(1)


async def test_security_headers_and_csrf_meta(client, people):
    csrf = await login(client, "anna")
    resp = await client.get("/console")
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["Cache-Control"] == "private, no-store"
    html = await resp.text()
    assert f'<meta name="csrf-token" content="{csrf}">' in html
    assert f'name="csrf_token" value="{csrf}"' in html
    # No inline script and no inline event handler anywhere (CSP would block them).
    for path in ("/console", "/customers", "/customers/new"):
        page = await (await client.get(path)).text()
        assert not re.search(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)", page), path
        assert not re.search(r"\son[a-z]+=", page), path


async def test_logout_form_needs_csrf(client, people):
    csrf = await login(client, "anna")
    resp = await client.post("/logout", data={"csrf_token": "wrong"}, allow_redirects=False)
    assert resp.status == 403
    resp = await client.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)
    assert resp.status == 303
    resp = await client.get("/console", allow_redirects=False)
    assert resp.status == 302


async def test_note_lands_on_the_timeline_and_in_the_audit_log(client, people):
    resp = await client.post(
        "/api/v1/customers", json={"name": "Max"}, headers=bearer(people["anna"])
    )
    customer_id = (await resp.json())["id"]
    csrf = await login(client, "anna")
    # Cookie session without the CSRF header is refused.
    resp = await client.post(f"/api/v1/customers/{customer_id}/notes", json={"text": "hi"})
    assert resp.status == 403
    resp = await client.post(
        f"/api/v1/customers/{customer_id}/notes",
        json={"text": "  Wants a callback on Monday  ", "call_id": "1700000000.1"},
        headers={"X-CSRF-Token": csrf},
    )
    assert resp.status == 201, await resp.text()
    note = await resp.json()
    assert (note["channel"], note["summary"], note["author"]) == (
        "note",
        "Wants a callback on Monday",
        "anna",
    )
    assert note["data"]["call_id"] == "1700000000.1"
    timeline = await (await client.get(f"/api/v1/customers/{customer_id}/timeline")).json()
    assert [i["summary"] for i in timeline["items"]] == ["Wants a callback on Monday"]
    for bad in ({"text": ""}, {"text": 5}, {"text": "x" * 10_001}, {"text": "ok", "call_id": 7}):
        resp = await client.post(
            f"/api/v1/customers/{customer_id}/notes", json=bad, headers={"X-CSRF-Token": csrf}
        )
        assert resp.status == 400, bad
    resp = await client.post(
        "/api/v1/customers/999999/notes", json={"text": "x"}, headers={"X-CSRF-Token": csrf}
    )
    assert resp.status == 404
    # Marketers do not write call notes.
    resp = await client.post(
        f"/api/v1/customers/{customer_id}/notes", json={"text": "x"}, headers=bearer(people["mia"])
    )
    assert resp.status == 403
    # The audit log has it; agents may not read the audit log.
    resp = await client.get("/api/v1/audit", headers=bearer(people["anna"]))
    assert resp.status == 403
    resp = await client.get(
        "/api/v1/audit", params={"action": "note"}, headers=bearer(people["sam"])
    )
    entries = (await resp.json())["items"]
    assert [(e["action"], e["user"], e["target"]) for e in entries] == [
        ("note.create", "anna", f"customer:{customer_id}")
    ]


async def test_audit_log_filters_and_pages(client, people):
    for n in range(5):
        await client.post(
            "/api/v1/customers", json={"name": f"C{n}"}, headers=bearer(people["mia"])
        )
    await client.post("/api/v1/session", json={"username": "anna", "password": "wrong-password"})
    h = bearer(people["root"])
    page1 = await (await client.get("/api/v1/audit?action=customer&limit=3", headers=h)).json()
    assert len(page1["items"]) == 3 and page1["next"]
    page2 = await (
        await client.get(f"/api/v1/audit?action=customer&limit=3&cursor={page1['next']}", headers=h)
    ).json()
    assert len(page2["items"]) == 2 and page2["next"] is None
    ids = [e["id"] for e in page1["items"] + page2["items"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 5
    assert {e["user"] for e in page1["items"]} == {"mia"}
    failed = await (await client.get("/api/v1/audit?action=login.failed", headers=h)).json()
    assert [(e["user"], e["target"]) for e in failed["items"]] == [(None, "anna")]
    mine = await (await client.get("/api/v1/audit?user=mia", headers=h)).json()
    assert len(mine["items"]) == 5
    resp = await client.get("/api/v1/audit?from=yesterday", headers=h)
    assert resp.status == 400
    await login(client, "sam")
    html = await (await client.get("/admin/audit?action=customer")).text()
    assert html.count("customer.create") == 5


async def test_customer_list_page_filters_and_pages_without_js(client, people):
    h = bearer(people["mia"])
    for n in range(30):
        await client.post(
            "/api/v1/customers",
            json={"name": f"Kunde {n:02d}", "tags": ["even" if n % 2 == 0 else "odd"]},
            headers=h,
        )
    await login(client, "mia")
    html = await (await client.get("/customers?tag=even&sort=name&order=desc")).text()
    names = re.findall(r'<a href="/customers/\d+">(Kunde \d+)</a>', html)
    assert names == [f"Kunde {n:02d}" for n in range(28, -1, -2)]
    html = await (await client.get("/customers")).text()
    first = re.findall(r'<a href="/customers/\d+">(Kunde \d+)</a>', html)
    assert len(first) == 25
    nxt = re.search(r'id="next-page" class="[^"]*" href="([^"]+)"', html)
    assert nxt
    html = await (await client.get(nxt.group(1).replace("&amp;", "&"))).text()
    second = re.findall(r'<a href="/customers/\d+">(Kunde \d+)</a>', html)
    assert first + second == [f"Kunde {n:02d}" for n in range(30)]


async def test_customer_page_404_is_a_page(client, people):
    await login(client, "anna")
    resp = await client.get("/customers/424242")
    assert resp.status == 404 and "does not exist" in await resp.text()
    resp = await client.get("/customers/abc")
    assert resp.status == 404


async def _wait_job(
    client: TestClient[Any, Any], job: str, headers: dict[str, str]
) -> dict[str, Any]:
    for _ in range(200):
        resp = await client.get(f"/api/v1/customers/import/{job}", headers=headers)
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        if body["state"] in ("done", "failed"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError("import job did not finish")


async def test_import_upload_runs_in_the_background_with_progress(client, people):
    h = bearer(people["mia"])
    data = aiohttp.FormData()
    data.add_field(
        "file",
        (FIXTURES / "import" / "messy.csv").read_bytes(),
        filename="messy.csv",
        content_type="text/csv",
    )
    data.add_field("source", "fair-2024")
    resp = await client.post("/api/v1/customers/import", data=data, headers=h)
    assert resp.status == 202, await resp.text()
    job = (await resp.json())["job"]
    body = await _wait_job(client, job, h)
    assert body["state"] == "done", body
    assert body["percent"] == 100.0
    totals = body["totals"]
    assert totals["rows"] > 0 and totals["created"] > 0
    assert totals["rows"] == sum(totals[k] for k in ("created", "updated", "merged", "rejected"))
    assert len(body["rejected"]) == totals["rejected"]
    found = await (await client.get("/api/v1/customers?source=fair-2024", headers=h)).json()
    assert len(found["items"]) == totals["created"]
    # Another user cannot read my job; agents cannot import at all.
    resp = await client.get(f"/api/v1/customers/import/{job}", headers=bearer(people["sam"]))
    assert resp.status == 404
    resp = await client.post(
        "/api/v1/customers/import",
        data=aiohttp.FormData({"x": "1"}),
        headers=bearer(people["anna"]),
    )
    assert resp.status == 403
    audit = await (
        await client.get("/api/v1/audit?action=customer.import", headers=bearer(people["root"]))
    ).json()
    assert audit["items"][0]["details"]["created"] == totals["created"]


async def test_import_refuses_what_it_cannot_read(client, people):
    h = bearer(people["mia"])
    data = aiohttp.FormData()
    data.add_field("file", b"\x00\x01binary", filename="x.exe")
    resp = await client.post("/api/v1/customers/import", data=data, headers=h)
    assert resp.status == 400
    data = aiohttp.FormData()
    data.add_field("file", b"colour;size\nred;4\n", filename="paint.csv")
    resp = await client.post("/api/v1/customers/import", data=data, headers=h)
    assert resp.status == 202
    body = await _wait_job(client, (await resp.json())["job"], h)
    assert body["state"] == "failed" and "name" in body["error"]
    # A dry run changes nothing.
    data = aiohttp.FormData()
    data.add_field("file", b"name;email\nDry Run;dry@example.test\n", filename="d.csv")
    data.add_field("dry_run", "1")
    resp = await client.post("/api/v1/customers/import", data=data, headers=h)
    body = await _wait_job(client, (await resp.json())["job"], h)
    assert body["state"] == "done" and body["dry_run"] and body["totals"]["created"] == 1
    found = await (await client.get("/api/v1/customers?q=Dry", headers=h)).json()
    assert found["items"] == []
