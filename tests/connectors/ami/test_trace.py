"""Replay of a real Asterisk 22 click-to-call over TCP: what we send and what the sink gets."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from connectors.ami import AmiConnector
from hub.telephony.ports import OriginateRequest

from .conftest import RecordingSink, eventually, settings_for
from .fake_ami import frame, parse
from .test_protocol import reference_events

TRACES = Path(__file__).resolve().parents[2] / "fixtures" / "asterisk22"


def actions_of(sent: bytes) -> list[dict[str, str]]:
    return [parse(chunk) for chunk in sent.split(b"\r\n\r\n") if chunk]


async def test_click_to_call_replay(sink: RecordingSink) -> None:
    recorded = (TRACES / "click-to-call.ami").read_bytes()
    expected_sent = actions_of((TRACES / "click-to-call.sent").read_bytes())
    banner, _, rest = recorded.partition(b"\r\n")
    login_answer, _, after_login = rest.partition(b"\r\n\r\n")
    stream, _, _goodbye = after_login.rpartition(b"Response: Goodbye")
    received: list[dict[str, str]] = []

    async def replay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(banner + b"\r\n")
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                action = parse(await reader.readuntil(b"\r\n\r\n"))
                received.append(action)
                aid = action["ActionID"]
                if action["Action"] == "Login":
                    # Asterisk echoes the ActionID: ours is not the recorded "login-1".
                    writer.write(login_answer.replace(b"login-1", aid.encode()) + b"\r\n\r\n")
                elif action["Action"] == "CoreShowChannels":
                    writer.write(
                        frame({"Response": "Success", "ActionID": aid, "EventList": "start"})
                        + frame({"Event": "CoreShowChannelsComplete", "ActionID": aid})
                    )
                elif action["Action"] == "Originate":
                    writer.write(stream)  # FullyBooted ... the queued answer ... every call event
                elif action["Action"] == "Logoff":
                    writer.write(b"Response: Goodbye\r\nActionID: " + aid.encode() + b"\r\n\r\n")
                    break
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(replay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = AmiConnector(settings_for(port, ping_interval=60.0), sink)
    await conn.start()
    await eventually(lambda: len(sink.resyncs) == 1, "resync")
    recorded_originate = expected_sent[1]
    request = OriginateRequest(
        channel=recorded_originate["Channel"],
        exten=recorded_originate["Exten"],
        context=recorded_originate["Context"],
        caller_id=recorded_originate["CallerID"],
        timeout_s=30.0,
        variables=dict([recorded_originate["Variable"].split("=", 1)]),
        request_id=recorded_originate["ActionID"],
    )
    assert await conn.originate(request) == "originate-2"
    events = reference_events(stream)
    await eventually(lambda: len(sink.events) == len(events), "every recorded event")
    await conn.stop()
    server.close()
    await server.wait_closed()

    assert sink.events == events
    assert sink.named("OriginateResponse")[0]["Response"] == "Success"
    sent_originate = next(a for a in received if a["Action"] == "Originate")
    assert sent_originate == recorded_originate
    login = received[0]
    assert {k: login[k] for k in ("Action", "Username", "Events")} == {
        k: expected_sent[0][k] for k in ("Action", "Username", "Events")
    }
