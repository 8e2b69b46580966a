"""Customers in a real browser: search as you type, paging, edit, merge, import with a progress
bar, and a customer whose name is a script tag shown as text, never run."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.conftest import add_user, bearer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
EVIL = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


async def _post(url: str, token: str, path: str, body: dict) -> dict:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(url + path, json=body, headers=bearer(token))
        assert resp.status in (200, 201), await resp.text()
        return dict(await resp.json())


async def test_a_customer_named_like_a_script_is_shown_not_run(hub, client, app_url, pages, expect):
    token = await add_user(hub, "anna", "agent", extension="201", devices=("PJSIP/201",))
    evil = await _post(
        app_url,
        token,
        "/api/v1/customers",
        {
            "name": EVIL,
            "company": "<b>Bold Corp</b>",
            "phones": ["+4930111222"],
            "emails": ["evil@example.test"],
            "tags": ["<i>tag</i>"],
            "notes": "<svg onload=alert(1)>",
        },
    )
    await _post(
        app_url,
        token,
        f"/api/v1/customers/{evil['id']}/notes",
        {"text": "<script>window.__pwned = 3</script>"},
    )

    anna = await pages.login(app_url, "anna", path="/customers")
    await anna.fill("#q", "script")  # search as you type: the JS-rendered list
    row = anna.locator("#customers tbody tr").first
    await expect(row.locator("td").first).to_have_text(EVIL)
    await expect(row).to_contain_text("<i>tag</i>")
    await anna.click("#customers tbody tr >> nth=0 >> a")  # the server-rendered card
    await expect(anna.locator("#card-name")).to_have_text(EVIL)
    await expect(anna.locator("#card-company")).to_have_text("<b>Bold Corp</b>")
    await expect(anna.locator("#timeline li.note")).to_contain_text(
        "<script>window.__pwned = 3</script>"
    )
    await pages.shot(anna, "customer-script-name")

    await anna.goto(app_url + "/console")  # the console builds the card in JS
    await anna.fill("#find", "script")
    await anna.click("#find-results button >> nth=0")
    await expect(anna.locator("#card-name")).to_have_text(EVIL)
    await expect(anna.locator("#timeline li.note")).to_contain_text("window.__pwned = 3")
    assert await anna.evaluate("() => window.__pwned") is None
    assert await anna.locator("#main img, #main svg[onload], #main b, #main i").count() == 0


async def test_search_as_you_type_filters_sort_and_paging(hub, client, app_url, pages, expect):
    token = await add_user(hub, "mia", "marketer")
    async with aiohttp.ClientSession() as http:
        for n in range(60):
            resp = await http.post(
                app_url + "/api/v1/customers",
                headers=bearer(token),
                json={
                    "name": f"Kunde {n:02d}",
                    "company": "Nordwind" if n % 3 == 0 else "Südwind",
                    "tags": ["vip"] if n % 10 == 0 else [],
                    "phones": [f"+49301000{n:02d}"],
                },
            )
            assert resp.status == 201
    mia = await pages.login(app_url, "mia", path="/customers")
    rows = mia.locator("#customers tbody tr")
    await expect(rows).to_have_count(25)
    await mia.click("#next-page")
    await expect(rows.first).to_contain_text("Kunde 25")
    await mia.click("#next-page")
    await expect(rows).to_have_count(10)
    await expect(mia.locator("#next-page")).to_be_hidden()
    await mia.click("#prev-page")
    await expect(rows.first).to_contain_text("Kunde 25")

    await mia.type("#q", "Nordw", delay=30)
    await expect(rows).to_have_count(20)
    await mia.fill("input[name=tag]", "vip")
    await expect(rows).to_have_count(2)  # 0 and 30: both vip and Nordwind
    await mia.select_option("select[name=order]", "desc")
    await expect(rows.first).to_contain_text("Kunde 30")
    assert "tag=vip" in mia.url and "q=Nordw" in mia.url
    await mia.fill("#q", "30100005")  # phone digits
    await mia.fill("input[name=tag]", "")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("Kunde 05")
    await pages.shot(mia, "customers-search")


async def test_edit_and_merge_two_duplicates(hub, client, app_url, pages, expect):
    token = await add_user(hub, "anna", "agent", extension="201", devices=("PJSIP/201",))
    keep = await _post(
        app_url, token, "/api/v1/customers", {"name": "Erika Mustermann", "phones": ["030 123456"]}
    )
    dupe = await _post(
        app_url,
        token,
        "/api/v1/customers",
        {
            "name": "E. Mustermann",
            "emails": ["erika@example.test"],
            "city": "Berlin",
            "tags": ["newsletter"],
        },
    )
    await _post(app_url, token, f"/api/v1/customers/{dupe['id']}/notes", {"text": "Likes email"})

    anna = await pages.login(app_url, "anna", path=f"/customers/{keep['id']}")
    await anna.click("#edit-toggle")
    await anna.fill("#edit-form input[name=company]", "Musterfirma")
    await anna.fill("#edit-form input[name=tags]", "vip, berlin")
    await anna.click("#edit-form button[type=submit]")
    await expect(anna.locator("#card-company")).to_have_text("Musterfirma")
    await expect(anna.locator("#card-tags")).to_contain_text("berlin")

    await anna.click("text=Merge…")
    await anna.fill("[data-find=other]", "E. Muster")
    await anna.click("[data-results=other] button >> nth=0")
    await expect(anna.locator("[data-card=other]")).to_contain_text("erika@example.test")
    await pages.shot(anna, "customers-merge")
    anna.once("dialog", lambda dialog: dialog.accept())  # Playwright awaits the coroutine
    await anna.click("#merge-go")
    await anna.wait_for_url(f"**/customers/{keep['id']}")
    await expect(anna.locator("#card-contacts")).to_contain_text("erika@example.test")
    await expect(anna.locator("#card-contacts")).to_contain_text("+4930123456")
    await expect(anna.locator("#card-tags")).to_contain_text("newsletter")
    await expect(anna.locator("#timeline")).to_contain_text("Likes email")
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{app_url}/api/v1/customers/{dupe['id']}", headers=bearer(token))
        assert resp.status == 404


async def test_import_a_file_with_a_progress_bar(hub, client, app_url, pages, expect, tmp_path):
    await add_user(hub, "mia", "marketer")
    rows = ["Name;Firma;Telefon;E-Mail;Schlagworte"]
    rows += [
        f"Person {n};Firma {n % 7};+49 30 2{n:06d};p{n}@example.test;import" for n in range(1500)
    ]
    rows.append("No Contact;;not a phone;not-an-email;")
    path = tmp_path / "kunden.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")

    mia = await pages.login(app_url, "mia", path="/customers/import")
    await mia.set_input_files("#import-form input[type=file]", str(path))
    await mia.fill("#import-form input[name=source]", "messe")
    await mia.click("#import-form button[type=submit]")
    await expect(mia.locator("#job-title")).to_have_text("Import finished", timeout=60_000)
    assert await mia.locator("#job-progress").evaluate("p => p.value") == 100
    await expect(mia.locator("#job-percent")).to_have_text("100 %")
    await expect(mia.locator("#job-counts")).to_contain_text("1501 rows: 1500 created")
    await expect(mia.locator("#job-rejected tr")).to_have_count(1)
    await pages.shot(mia, "customers-import")
    await mia.goto(app_url + "/customers?source=messe")
    await expect(mia.locator("#customers tbody tr")).to_have_count(25)
