"""Replaying recorded traffic: raw Asterisk 22 bytes and cacofonisk JSON event lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.pbxsim import PbxSimulator
from connectors.pbxsim.frames import encode_frame
from connectors.pbxsim.replay import load_trace, login_prefix_length
from tests.connectors.pbxsim.conftest import FIXTURES, AmiClient, need_cacofonisk

CALL_TRACES = sorted(
    path.name for path in FIXTURES.glob("*.ami") if path.name != "login-failed.ami"
)


@pytest.mark.parametrize("name", CALL_TRACES)
async def test_replay_reproduces_the_bytes_after_login(
    sim: PbxSimulator, client: AmiClient, name: str
) -> None:
    data = (FIXTURES / name).read_bytes()
    expected = data[login_prefix_length(data) :]
    await sim.replay(FIXTURES / name)
    assert await client.read_exact(len(expected)) == expected
    assert await client.sync() == []


@pytest.mark.parametrize("name", ["inbound-queue.ami", "login-failed.ami"])
async def test_login_replay_mode_reproduces_the_whole_recording(
    sim: PbxSimulator, name: str
) -> None:
    sim.login_replay = (FIXTURES / name, False)
    data = (FIXTURES / name).read_bytes()
    sent = (FIXTURES / name.replace(".ami", ".sent")).read_bytes()
    login = sent[: sent.index(b"\r\n\r\n") + 4]
    ami = await AmiClient.connect(sim.port, banner=False)
    ami.writer.write(login)
    await ami.writer.drain()
    assert await ami.read_exact(len(data)) == data
    await ami.close()


async def test_replay_tracks_channels_for_coreshowchannels(
    sim: PbxSimulator, client: AmiClient, tmp_path: Path
) -> None:
    data = (FIXTURES / "inbound-answered.ami").read_bytes()
    cut = data.index(b"Event: Cdr")  # mid-call: after the bridge, before the hangups
    partial = tmp_path / "partial.ami"
    partial.write_bytes(data[:cut])
    await sim.replay(partial)
    await client.read_exact(cut - login_prefix_length(data))
    await client.send(("Action", "CoreShowChannels"), ("ActionID", "c1"))
    frames = await client.read_until(lambda f: f.get("Event") == "CoreShowChannelsComplete")
    listed = {f.get("Channel") for f in frames if f.get("Event") == "CoreShowChannel"}
    assert listed == {
        "Local/4930555100@from-pstn-00000000;1",
        "Local/4930555100@from-pstn-00000000;2",
        "Local/100@agents-00000001;1",
        "Local/100@agents-00000001;2",
    }
    await sim.replay(FIXTURES / "inbound-answered.ami")  # the full call ends them all
    await client.read_exact(len(data) - login_prefix_length(data))
    assert sim.live_channels() == []


async def test_timed_replay_follows_meta_chunks(
    sim: PbxSimulator, client: AmiClient, tmp_path: Path
) -> None:
    recorded = (FIXTURES / "login-logoff.ami").read_bytes()
    banner_and_login = recorded[: login_prefix_length(recorded)]
    assert banner_and_login.endswith(b"Message: Authentication accepted\r\n\r\n")
    body = b"".join(
        encode_frame([("Event", "UserEvent"), ("Privilege", "user,all"), ("Seq", str(n))])
        for n in range(3)
    )
    trace = tmp_path / "tiny.ami"
    trace.write_bytes(banner_and_login + body)
    size = len(body) // 3
    start = len(banner_and_login)
    meta = {
        "chunks_[t_s,offset,len]": [
            [0.0, 0, start],
            [0.01, start, size],
            [0.02, start + size, size],
            [0.03, start + 2 * size, size],
        ]
    }
    (tmp_path / "tiny.meta.json").write_text(json.dumps(meta))
    chunks = load_trace(trace, timed=True)
    assert [delay for delay, _ in chunks] == pytest.approx([0.0, 0.01, 0.02])
    await sim.replay(trace, timed=True)
    assert await client.read_exact(len(body)) == body


async def test_cacofonisk_json_replay_renders_frames(sim: PbxSimulator, client: AmiClient) -> None:
    path = need_cacofonisk() / "simple" / "ab_success_a_hangup.json"
    recorded = json.loads(path.read_text())
    await sim.replay(path)
    frames = [await client.read_frame() for _ in recorded]
    for frame, event in zip(frames, recorded, strict=True):
        assert frame.fields[0] == ("Event", event["Event"])
        assert frame.fields[1] == ("Privilege", event["Privilege"])
        assert frame.as_dict() == {k: v for k, v in event.items() if k != "content"}
    assert await client.sync() == []
    assert sim.live_channels() == []
