"""Supervisor pages in a real browser: call log filters + CSV + recordings, figures, wallboard."""

from __future__ import annotations

import csv
import io
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from hub.models.calls import Call
from tests.conftest import LiveHub, add_user, bearer


def _wav(path: Path, seconds: float = 1.0) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x10" * int(8000 * seconds))


async def _seed_calls(hub, recordings: Path) -> None:
    """A day of calls for anna and ben with every disposition, one with a recording."""
    day = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)
    rows = []
    for n in range(40):
        agent = "anna" if n % 2 == 0 else "ben"
        disposition = ("answered", "answered", "missed", "abandoned", "busy")[n % 5]
        started = day - timedelta(days=n % 3, minutes=7 * n)
        answered = disposition == "answered"
        rows.append(
            Call(
                linkedid=f"17000000{n:02d}.1",
                direction="inbound" if n % 4 else "outbound",
                caller=f"+49301234{n:02d}",
                callee="+4930999000" if n % 4 else f"+49170000{n:02d}",
                agent=agent if answered else None,
                rang=[agent],
                answered_by=[],
                queue="support" if n % 3 == 0 else None,
                started_at=started,
                answered_at=started + timedelta(seconds=8) if answered else None,
                ended_at=started + timedelta(seconds=8 + (90 if answered else 0)),
                wait_seconds=8.0,
                talk_seconds=90.0 if answered else 0.0,
                disposition=disposition,
                recording=f"/var/spool/asterisk/monitor/call-{n}.wav" if n == 0 else None,
                transfers=[],
            )
        )
    _wav(recordings / "call-0.wav")
    async with hub.sessions() as session, session.begin():
        session.add_all(rows)


async def test_supervisor_filters_the_call_log_downloads_csv_and_plays_a_recording(
    hub, client, app_url, pages, expect, tmp_path
):
    await add_user(hub, "anna", "agent", extension="201", devices=("PJSIP/201",))
    await add_user(hub, "ben", "agent", extension="202", devices=("PJSIP/202",))
    await add_user(hub, "sam", "supervisor")
    mia = await add_user(hub, "mia", "marketer")
    await _seed_calls(hub, tmp_path / "recordings")

    sam = await pages.login(app_url, "sam", path="/supervisor/calls")
    rows = sam.locator("#calls tbody tr")
    await expect(rows).to_have_count(25)  # one page
    await expect(sam.locator("#next-page")).to_be_visible()
    await pages.shot(sam, "supervisor-call-log")

    await sam.select_option("select[name=agent]", "anna")
    await sam.select_option("select[name=status]", "answered")
    # anna answered the even n with n % 5 in (0, 1): 0, 6, 10, 16, 20, 26, 30, 36.
    await expect(rows).to_have_count(8)
    for text in await sam.locator("#calls tbody tr td:nth-child(6)").all_text_contents():
        assert text == "anna"
    await expect(sam.locator("#next-page")).to_be_hidden()
    assert "agent=anna" in sam.url and "status=answered" in sam.url

    name, content = await pages.download(sam, "#csv")
    assert name == "calls.csv"
    table = list(csv.DictReader(io.StringIO(content.decode())))
    assert len(table) == 8
    assert {(r["agent"], r["disposition"]) for r in table} == {("anna", "answered")}

    # The recorded call has a player that really loads the audio.
    await sam.select_option("select[name=status]", "")
    await sam.select_option("select[name=agent]", "")
    await sam.select_option("select[name=direction]", "outbound")
    await expect(rows).to_have_count(10)  # the outbound calls (n % 4 == 0): the list settled
    recorded = sam.locator("#calls tbody tr[data-id] button", has_text="Play")
    await expect(recorded).to_have_count(1)
    await recorded.click()
    await sam.wait_for_function(
        "() => { const a = document.querySelector('#calls audio'); return a && a.readyState >= 1 && a.duration > 0.9; }"
    )
    # A marketer never gets the recording, even with the URL.
    call_id = await sam.locator("#calls tbody tr", has=sam.locator("audio")).get_attribute(
        "data-id"
    )
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{app_url}/api/v1/calls/{call_id}/recording", headers=bearer(mia))
        assert resp.status == 403

    # Paging: page 2 of everything, and back.
    await sam.click("#clear-filters")
    await expect(rows).to_have_count(25)
    first_page = await sam.locator("#calls tbody tr").first.get_attribute("data-id")
    await sam.click("#next-page")
    await expect(rows).to_have_count(15)
    await sam.click("#prev-page")
    await expect(sam.locator("#calls tbody tr").first).to_have_attribute("data-id", first_page)


async def test_figures_per_agent_and_hour_with_charts(
    hub, client, app_url, pages, expect, tmp_path
):
    await add_user(hub, "sam", "supervisor")
    await _seed_calls(hub, tmp_path / "recordings")
    sam = await pages.login(app_url, "sam", path="/supervisor/stats")
    agents = sam.locator("#agent-table tbody tr")
    await expect(agents).to_have_count(2)
    await expect(agents.first).to_contain_text("anna")
    await expect(sam.locator("#tiles .tile").first).to_contain_text("40")
    assert await sam.locator("#agent-chart svg rect").count() > 0
    assert await sam.locator("#hour-chart svg rect").count() > 0
    await pages.shot(sam, "supervisor-figures")
    await sam.click("button[data-range='0']")  # today only: fewer calls
    await expect(sam.locator("#tiles .tile").first).not_to_contain_text("40")


async def test_an_agent_is_refused_the_supervisor_pages(hub, client, app_url, pages, expect):
    await add_user(hub, "anna", "agent", extension="201", devices=("PJSIP/201",))
    anna = await pages.login(app_url, "anna", path="/console")
    for path in ("/supervisor/calls", "/supervisor/stats", "/supervisor/wallboard", "/admin/audit"):
        response = await anna.goto(app_url + path)
        assert response.status == 403
        await expect(anna.locator("h1")).to_have_text("Not for your role")
    await pages.shot(anna, "agent-refused")
    assert await anna.locator("nav a", has_text="Call log").count() == 0


async def test_wallboard_shows_calls_in_progress(live_hub: LiveHub, pages, expect):
    sam = await pages.login(
        live_hub.url, "sam", "correct horse battery", path="/supervisor/wallboard"
    )
    await expect(sam.locator("#pbx-link")).to_have_text("PBX link: up")
    await expect(sam.locator("#agents li")).to_have_count(3)
    await live_hub.sim.place_call(
        "answered", caller="+4930555666", extension="202", ring=1.5, talk=4.0
    )
    row = sam.locator("#live-calls tbody tr", has_text="+4930555666")
    await expect(row).to_be_visible()
    await expect(row).to_contain_text("talking")
    await expect(sam.locator("#agents li[data-agent=ben]")).to_contain_text("on a call")
    await pages.shot(sam, "supervisor-wallboard")
    await expect(sam.locator("#live-calls tbody")).to_contain_text(
        "No calls right now.", timeout=20_000
    )
