"""Marketing in a real browser: template with preview, segment with live count, a campaign
scheduled now whose progress bar reaches 100 % while a real SMTP server takes the mail."""

from __future__ import annotations

from tests.browser.conftest import MailHub
from tests.hub.campaigns.helpers import bulk_customers


async def test_marketer_previews_schedules_and_watches_the_campaign_finish(
    mail_hub: MailHub, pages, expect
):
    live = mail_hub
    await bulk_customers(live.hub, 30, city="Berlin", source="fair")
    await bulk_customers(live.hub, 5, first=100, city="Hamburg", source="web")
    mia = await pages.login(live.url, "mia", path="/marketing/templates")

    # --- template: checked as you type, then saved and previewed for a chosen customer
    await mia.fill("#template-form input[name=name]", "Spring news")
    await mia.fill("#template-form input[name=subject]", "Hello {{ customer.nickname }}")
    await expect(mia.locator("#validity")).to_contain_text("✗")
    await expect(mia.locator("#validity")).to_contain_text("nickname")
    await mia.fill("#template-form input[name=subject]", "Hello {{ customer.name }}")
    await mia.fill(
        "#template-form textarea[name=html]",
        "<p class=greet>Dear {{ customer.name }} from {{ customer.city }}</p>",
    )
    await mia.fill("#template-form textarea[name=text]", "Dear {{ customer.name }}")
    await expect(mia.locator("#validity")).to_contain_text("✓ renders")
    await mia.click("#template-form button[type=submit]")
    await expect(mia.locator("#templates")).to_contain_text("Spring news")
    await mia.fill("#preview-customer", "Customer 7")
    await mia.click("#preview-results button >> nth=0")
    await expect(mia.locator("#preview-subject")).to_have_text("Hello Customer 7")
    greet = mia.frame_locator("#preview-html").locator("p.greet")
    await expect(greet).to_have_text("Dear Customer 7 from Berlin")
    await pages.shot(mia, "marketing-template")

    # --- segment with a live count
    await mia.goto(live.url + "/marketing/segments")
    await expect(mia.locator("#live-count")).to_have_text("35")  # no condition: everybody
    await mia.click("#add-condition")
    row = mia.locator("#conditions .condition").first
    await row.locator("select.field").select_option("city")
    await row.locator("select.op").select_option("eq")
    await row.locator("input.value").fill("Berlin")
    await expect(mia.locator("#live-count")).to_have_text("30")
    await mia.fill("#segment-form input[name=name]", "Berliners")
    await mia.click("#segment-form button[type=submit]")
    await expect(mia.locator("#segments")).to_contain_text("Berliners")
    await expect(mia.locator("#segments")).to_contain_text("30 customers")
    await pages.shot(mia, "marketing-segments")

    # --- campaign: draft, preview, send now, progress to 100 %
    await mia.goto(live.url + "/marketing/campaigns")
    await mia.click("#show-new")
    await mia.fill("#campaign-form input[name=name]", "Spring in Berlin")
    await mia.select_option("#campaign-form select[name=template_id]", label="Spring news")
    await mia.select_option("#campaign-form select[name=segment_id]", label="Berliners")
    await expect(mia.locator("#audience")).to_have_text("30 customers match now")
    await mia.click("#campaign-form button[type=submit]")
    await mia.wait_for_url("**/marketing/campaigns/*")
    await expect(mia.locator("#c-name")).to_have_text("Spring in Berlin")
    await expect(mia.locator("#c-status")).to_have_text("draft")
    await mia.fill("#preview-customer", "Customer 3")
    await mia.click("#preview-results button >> nth=0")
    await expect(mia.locator("#preview-subject")).to_have_text("Hello Customer 3")

    await mia.click("#schedule-go")  # "Send now" is the default choice
    await expect(mia.locator("#c-percent")).to_have_text("100 %", timeout=30_000)
    assert await mia.locator("#c-progress").evaluate("p => p.value") == 100
    await expect(mia.locator("#c-counts")).to_contain_text("30 sent")
    await expect(mia.locator("#r-tiles .tile").nth(1)).to_contain_text("30")
    assert await mia.locator("#r-runs svg rect").count() > 0
    await pages.shot(mia, "marketing-campaign-report")
    assert len(live.sink.received) == 30
    assert {r.rcpt for r in live.sink.received} == {f"c{n}@example.test" for n in range(30)}

    # The list shows the finished bar too.
    await mia.goto(live.url + "/marketing/campaigns")
    bar = mia.locator("#campaigns tbody tr", has_text="Spring in Berlin").locator("progress")
    await expect(bar).to_have_attribute("value", "100")
    await pages.shot(mia, "marketing-campaigns")

    # A customer who writes markup into their name sees it as text in the preview; nothing runs.
    async with live.hub.sessions() as session, session.begin():
        from hub.customers import create_customer

        await create_customer(
            session, {"name": '<img src=x onerror="top.__pwned=1">Eve', "city": "Kiel"}, "DE"
        )
    await mia.goto(live.url + "/marketing/templates")
    await mia.locator("#templates button", has_text="Spring news").click()
    await mia.fill("#preview-customer", "Eve")
    await mia.click("#preview-results button >> nth=0")
    await expect(greet).to_have_text('Dear <img src=x onerror="top.__pwned=1">Eve from Kiel')
    assert await mia.evaluate("() => window.__pwned") is None
