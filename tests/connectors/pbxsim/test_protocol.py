"""The manager protocol itself, compared byte for byte with what Asterisk 22 sent."""

from __future__ import annotations

import hashlib

from connectors.pbxsim import PbxSimulator
from connectors.pbxsim.frames import BANNER, encode_frame, fields_of, split_raw_frames
from tests.connectors.pbxsim.conftest import FIXTURES, AmiClient


def recorded(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


async def test_banner_and_accepted_login_match_asterisk_bytes(sim: PbxSimulator) -> None:
    trace = recorded("login-logoff.ami")
    frames = list(split_raw_frames(trace[len(BANNER) :]))
    ami = await AmiClient.connect(sim.port)
    assert ami.banner == BANNER == trace[: len(BANNER)]
    await ami.send(
        ("Action", "Login"),
        ("ActionID", "login-1"),
        ("Username", "hub"),
        ("Secret", "hubsecret"),
        ("Events", "on"),
    )
    assert await ami.read_raw_frame() == frames[0]
    fully_booted = await ami.read_frame()
    auth = await ami.read_frame()
    recorded_booted, recorded_auth = fields_of(frames[1]), fields_of(frames[2])
    assert [key for key, _ in fully_booted.fields] == [key for key, _ in recorded_booted]
    assert [key for key, _ in auth.fields] == [key for key, _ in recorded_auth]
    assert auth.get("AccountID") == "hub"
    assert auth.get("SystemName") == "pbxsim"
    assert (auth.get("RemoteAddress") or "").startswith("IPV4/TCP/127.0.0.1/")
    await ami.close()


async def test_wrong_secret_is_refused_exactly_like_asterisk_and_closed(
    sim: PbxSimulator,
) -> None:
    ami = await AmiClient.connect(sim.port, banner=False)
    ami.writer.write(recorded("login-failed.sent"))
    await ami.writer.drain()
    expected = recorded("login-failed.ami")
    assert await ami.read_exact(len(expected)) == expected
    assert await ami.eof()
    assert sim.actions[-1]["Secret"] == "wrong-secret"
    await ami.close()


async def test_unknown_user_is_refused(sim: PbxSimulator) -> None:
    ami = await AmiClient.connect(sim.port)
    await ami.send(("Action", "Login"), ("Username", "root"), ("Secret", "hubsecret"))
    response = await ami.read_frame()
    assert response.fields == [("Response", "Error"), ("Message", "Authentication failed")]
    assert await ami.eof()
    await ami.close()


async def test_ping_pong_logoff_shapes_match_the_recording(sim: PbxSimulator) -> None:
    trace = recorded("login-logoff.ami")
    pong, goodbye = list(split_raw_frames(trace[len(BANNER) :]))[3:5]
    ami = await AmiClient.connect(sim.port)
    await ami.login_and_settle()
    await ami.send(("Action", "Ping"), ("ActionID", "ping-2"))
    frame = await ami.read_frame()
    assert [key for key, _ in frame.fields] == [key for key, _ in fields_of(pong)]
    assert frame.get("Ping") == "Pong"
    assert float(frame.get("Timestamp") or "0") > 1_600_000_000
    await ami.send(("Action", "Logoff"), ("ActionID", "logoff-3"))
    assert await ami.read_raw_frame() == goodbye
    assert await ami.eof()
    await ami.close()


async def test_every_response_echoes_action_id(client: AmiClient) -> None:
    for name, extra in [
        ("Ping", ()),
        ("Events", (("EventMask", "on"),)),
        ("CoreShowChannels", ()),
        ("Hangup", (("Channel", "PJSIP/999-00000000"),)),
        ("NoSuchThing", ()),
    ]:
        response = await client.action(name, f"id-{name}-42", *extra)
        assert response.fields[1] == ("ActionID", f"id-{name}-42"), response


async def test_unknown_action_error_text(client: AmiClient) -> None:
    response = await client.action("Frobnicate", "x1")
    assert response.fields == [
        ("Response", "Error"),
        ("ActionID", "x1"),
        (
            "Message",
            "Invalid/unknown command: Frobnicate. Use Action: ListCommands to show available "
            "commands.",
        ),
    ]


async def test_actions_before_login_are_denied(sim: PbxSimulator) -> None:
    ami = await AmiClient.connect(sim.port)
    response = await ami.action("Ping", "early")
    assert response.fields == [
        ("Response", "Error"),
        ("ActionID", "early"),
        ("Message", "Permission denied"),
    ]
    response = await ami.action("Originate", "early-2", ("Channel", "PJSIP/201"))
    assert response.get("Message") == "Permission denied"
    assert sim.live_channels() == []
    login = await ami.login()
    assert login.get("Message") == "Authentication accepted"
    await ami.close()


async def test_frame_without_action_is_an_error(client: AmiClient) -> None:
    await client.send(("ActionID", "noaction"), ("Foo", "bar"))
    response = await client.read_frame()
    assert response.fields == [
        ("Response", "Error"),
        ("ActionID", "noaction"),
        ("Message", "Missing action in request"),
    ]


async def test_lf_only_and_case_insensitive_headers_are_accepted(sim: PbxSimulator) -> None:
    ami = await AmiClient.connect(sim.port)
    ami.writer.write(b"action: login\nactionid: a1\nusername: hub\nsecret: hubsecret\n\n")
    await ami.writer.drain()
    response = await ami.read_frame()
    assert response.get("Message") == "Authentication accepted"
    assert response.get("ActionID") == "a1"
    await ami.close()


async def test_events_off_at_login_and_events_action(sim: PbxSimulator) -> None:
    ami = await AmiClient.connect(sim.port)
    await ami.login(events="off")
    await sim.place_call("answered")
    await sim.wait_idle()
    assert await ami.sync("s1") == []
    on = await ami.action("Events", "ev1", ("EventMask", "call"))
    assert on.fields == [("Response", "Success"), ("ActionID", "ev1"), ("Events", "On")]
    await sim.place_call("answered")
    await sim.wait_idle()
    events = await ami.sync("s2")
    names = {frame.get("Event") for frame in events}
    assert "Newchannel" in names and "Hangup" in names
    assert "VarSet" not in names  # dialplan class was not asked for
    off = await ami.action("Events", "ev2", ("EventMask", "off"))
    assert off.get("Events") == "Off"
    await ami.close()


async def test_md5_challenge_login(sim: PbxSimulator) -> None:
    ami = await AmiClient.connect(sim.port)
    challenge = await ami.action("Challenge", "c1", ("AuthType", "MD5"))
    token = challenge.get("Challenge") or ""
    assert token.isdigit()
    key = hashlib.md5((token + "hubsecret").encode(), usedforsecurity=False).hexdigest()
    response = await ami.action(
        "Login", "c2", ("AuthType", "MD5"), ("Username", "hub"), ("Key", key)
    )
    assert response.get("Message") == "Authentication accepted"
    await ami.close()


async def test_encode_frame_matches_asterisk_empty_value_spelling() -> None:
    assert encode_frame([("AccountCode", ""), ("Exten", "100")]) == (
        b"AccountCode: \r\nExten: 100\r\n\r\n"
    )
