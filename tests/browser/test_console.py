"""Agent console in a real browser: the PBX simulator rings anna, her card pops, she writes a note."""

from __future__ import annotations

import aiohttp

from tests.browser.conftest import MailHub
from tests.conftest import LiveHub, bearer
from web.keys import SOCKETS
from web.ws_hub import SocketHub

CALLER = "+4930123456"


async def _customer(live: LiveHub, name: str, phone: str) -> int:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{live.url}/api/v1/customers",
            json={"name": name, "company": "ACME GmbH", "phones": [phone], "tags": ["vip"]},
            headers=bearer(live.tokens["sam"]),
        )
        assert resp.status == 201, await resp.text()
        return int((await resp.json())["id"])


async def test_ringing_pops_the_card_and_the_note_lands_on_the_timeline(live_hub, pages, expect):
    await _customer(live_hub, "Max Mustermann", CALLER)
    anna = await pages.login(live_hub.url, "anna", path="/console")
    ben = await pages.login(live_hub.url, "ben", path="/console")
    for page in (anna, ben):
        await expect(page.locator("#link-state")).to_have_text("live")
    await live_hub.sim.place_call("answered", caller=CALLER, extension="201", ring=1.0, talk=1.0)

    await expect(anna.locator("#card-name")).to_have_text("Max Mustermann")
    await expect(anna.locator("#card-contacts")).to_contain_text(CALLER)
    await expect(anna.locator("#card-tags")).to_contain_text("vip")
    await expect(anna.locator("#call-state")).to_contain_text("Max Mustermann")
    await pages.shot(anna, "console-pop")
    await expect(anna.locator("#call-state")).to_have_text("Call ended: add a quick note")
    # The finished call is on the one timeline.
    await expect(anna.locator("#timeline li.call")).to_have_count(1)

    await anna.fill(
        "form[data-form=note] textarea", "Wants the <b>blue</b> model; call back Monday"
    )
    await anna.click("form[data-form=note] button[type=submit]")
    first = anna.locator("#timeline li").first
    await expect(first).to_contain_text("Wants the <b>blue</b> model; call back Monday")
    await expect(first).to_contain_text("by anna")
    await pages.shot(anna, "console-after-note")

    # Ben's phone never rang: his console shows nothing.
    await expect(ben.locator("#card")).to_be_hidden()
    await expect(ben.locator("#call-state")).to_have_text("Waiting for calls")

    # The note is stored, linked to the call, and survives a reload of the full card.
    async with aiohttp.ClientSession() as http:
        resp = await http.get(
            f"{live_hub.url}/api/v1/customers?phone={CALLER}",
            headers=bearer(live_hub.tokens["sam"]),
        )
        customer_id = (await resp.json())["items"][0]["id"]
        resp = await http.get(
            f"{live_hub.url}/api/v1/customers/{customer_id}/timeline",
            headers=bearer(live_hub.tokens["sam"]),
        )
        items = (await resp.json())["items"]
    notes = [i for i in items if i["channel"] == "note"]
    calls = [i for i in items if i["channel"] == "call"]
    assert len(notes) == 1 and len(calls) == 1
    assert notes[0]["data"]["call_id"] == calls[0]["external_id"]


async def test_unknown_caller_gets_a_prefilled_create_form(live_hub, pages, expect):
    anna = await pages.login(live_hub.url, "anna", path="/console")
    await expect(anna.locator("#link-state")).to_have_text("live")
    await live_hub.sim.place_call("answered", caller="+4940111222", extension="201", ring=1.0)
    await expect(anna.locator("#unknown")).to_be_visible()
    await expect(anna.locator("#unknown-number")).to_have_text("+4940111222")
    await expect(anna.locator("#create-form input[name=phone]")).to_have_value("+4940111222")
    await pages.shot(anna, "console-unknown-caller")
    await anna.fill("#create-form input[name=name]", "Neue Kundin")
    await anna.click("#create-form button[type=submit]")
    await expect(anna.locator("#card-name")).to_have_text("Neue Kundin")
    await expect(anna.locator("#card-contacts")).to_contain_text("+4940111222")


async def test_the_live_link_says_offline_and_reconnects_by_itself(live_hub, pages, expect):
    anna = await pages.login(live_hub.url, "anna", path="/console")
    await expect(anna.locator("#link-state")).to_have_text("live")
    await expect(anna.locator("#offline")).to_be_hidden()
    # Offline (so reconnects fail) and the server side of every socket dropped, as in a restart.
    await anna.context.set_offline(True)
    await _socket_hub(live_hub).close_all()
    await expect(anna.locator("#offline")).to_be_visible()
    await expect(anna.locator("#link-state")).to_have_text("offline")
    await pages.shot(anna, "console-offline", full_page=False)
    await anna.context.set_offline(False)
    await expect(anna.locator("#link-state")).to_have_text("live", timeout=20_000)
    await expect(anna.locator("#offline")).to_be_hidden()
    # And pops reach the new socket.
    await _customer(live_hub, "Erika Musterfrau", CALLER)
    await live_hub.sim.place_call("answered", caller=CALLER, extension="201", ring=1.0)
    await expect(anna.locator("#card-name")).to_have_text("Erika Musterfrau")


def _socket_hub(live: LiveHub) -> SocketHub:
    """The running app's websocket hub."""
    return live.app[SOCKETS]


async def test_email_from_the_card_and_the_sms_part_counter(mail_hub: MailHub, pages, expect):
    async with mail_hub.hub.sessions() as session, session.begin():
        from hub.customers import create_customer

        await create_customer(
            session,
            {
                "name": "Max Mustermann",
                "emails": ["max@example.test", "max.work@example.test"],
                "phones": ["+4915112345678"],
            },
            "DE",
        )
    anna = await pages.login(mail_hub.url, "anna", path="/console")
    await anna.fill("#find", "Muster")
    await anna.click("#find-results button >> nth=0")
    await expect(anna.locator("#card-name")).to_have_text("Max Mustermann")

    await anna.click("#card-actions [data-tab=sms]")
    await anna.fill("form[data-form=sms] textarea", "Grüße aus Berlin! " * 10)
    await expect(anna.locator("[data-sms-count]")).to_contain_text("2 SMS")
    await anna.fill("form[data-form=sms] textarea", "Hello")
    await expect(anna.locator("[data-sms-count]")).to_contain_text("1 SMS")

    await anna.click("#card-actions [data-tab=email]")
    await anna.select_option("form[data-form=email] select[name=to]", "max.work@example.test")
    await anna.fill("form[data-form=email] input[name=subject]", "Your offer")
    await anna.fill("form[data-form=email] textarea", "Dear Max,\nhere it is.")
    await anna.click("form[data-form=email] button[type=submit]")
    await expect(anna.locator("#toast")).to_have_text("Email sent.")
    await expect(anna.locator("#timeline li.email")).to_contain_text("Your offer")
    await pages.shot(anna, "console-email-sent")
    assert [r.rcpt for r in mail_hub.sink.received] == ["max.work@example.test"]
