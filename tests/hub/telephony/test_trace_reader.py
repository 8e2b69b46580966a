"""Tests of the AMI trace reader: raw byte streams, timed replays, cacofonisk JSON, encoding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.telephony.trace_reader import (
    AmiStreamParser,
    encode_ami_event,
    encode_ami_events,
    parse_ami_stream,
    read_ami_trace,
    read_cacofonisk_trace,
    read_timed_ami_trace,
)
from tests.hub.telephony.traces import ASTERISK22, CACOFONISK, require_cacofonisk

STREAM = (
    b"Asterisk Call Manager/11.0.0\r\n"
    b"Response: Success\r\nActionID: login-1\r\nMessage: Authentication accepted\r\n\r\n"
    b"Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n"
    b"Event: Newchannel\r\nChannel: PJSIP/201-00000001\r\nAccountCode: \r\nExtra:\r\n"
    b"Context: from-internal\r\nApplication: Dial\r\nAppData: PJSIP/202,30\r\n\r\n"
)


def test_stream_skips_banner_and_responses() -> None:
    """Only events come back; empty values stay empty; values keep their colons."""
    events = parse_ami_stream(STREAM)
    assert [e["Event"] for e in events] == ["FullyBooted", "Newchannel"]
    newchannel = events[1]
    assert newchannel["AccountCode"] == "" and newchannel["Extra"] == ""
    assert newchannel["AppData"] == "PJSIP/202,30"


def test_responses_on_request() -> None:
    """include_responses keeps the action responses."""
    frames = parse_ami_stream(STREAM, include_responses=True)
    assert frames[0] == {
        "Response": "Success",
        "ActionID": "login-1",
        "Message": "Authentication accepted",
    }


@pytest.mark.parametrize("size", [1, 2, 3, 7, 30, 31, 64])
def test_incremental_feed_gives_the_same_frames(size: int) -> None:
    """Frames split anywhere (banner included) are reassembled."""
    parser = AmiStreamParser()
    events = []
    for offset in range(0, len(STREAM), size):
        events.extend(parser.feed(STREAM[offset : offset + size]))
    assert events == parse_ami_stream(STREAM)
    assert parser.banner == "Asterisk Call Manager/11.0.0"


def test_stream_without_banner() -> None:
    """A capture that starts mid-session still parses."""
    assert [e["Event"] for e in parse_ami_stream(STREAM[30:])] == ["FullyBooted", "Newchannel"]


def test_repeated_header_keeps_the_first_value() -> None:
    """Repeated keys (ChanVariable) do not overwrite the first value."""
    [event] = parse_ami_stream(b"Event: X\r\nV: a=1\r\nV: b=2\r\n\r\n")
    assert event["V"] == "a=1"


def test_encode_round_trip() -> None:
    """encode_ami_event writes what the parser reads."""
    events = [{"Event": "Hangup", "Uniqueid": "1.2", "Cause-txt": "Normal Clearing", "X": ""}]
    assert parse_ami_stream(b"".join(encode_ami_events(events))) == events
    assert encode_ami_event(events[0]).endswith(b"\r\n\r\n")


def test_recorded_asterisk22_trace() -> None:
    """A real recording: banner and responses out, every event keeps its fields."""
    events = read_ami_trace(ASTERISK22 / "inbound-answered.ami")
    assert all("Event" in e for e in events)
    assert events[0]["Event"] == "FullyBooted"
    hangups = [e for e in events if e["Event"] == "Hangup"]
    assert len(hangups) == 4 and all(h["Linkedid"] == "crm-test-1795337171.0" for h in hangups)


def test_timed_trace_follows_the_recorded_chunks() -> None:
    """Each event is stamped with the read that completed it, in order."""
    timed = read_timed_ami_trace(ASTERISK22 / "inbound-answered.ami")
    times = [t for t, _ in timed]
    assert times == sorted(times)
    assert [e for _, e in timed] == read_ami_trace(ASTERISK22 / "inbound-answered.ami")
    dial_end = next(t for t, e in timed if e["Event"] == "DialEnd" and "Uniqueid" in e)
    assert 2.4 < dial_end < 2.6
    meta = json.loads((ASTERISK22 / "inbound-answered.meta.json").read_text())
    assert timed[-1][0] <= meta["chunks_[t_s,offset,len]"][-1][0]


def test_cacofonisk_trace_drops_the_content_key(tmp_path: Path) -> None:
    """The JSON fixtures' `content` key is not part of the AMI frame."""
    path = tmp_path / "t.json"
    path.write_text(json.dumps([{"Event": "Hangup", "Cause": 16, "content": ""}, "junk"]))
    assert read_cacofonisk_trace(path) == [{"Event": "Hangup", "Cause": "16"}]


def test_cacofonisk_trace_must_be_a_list(tmp_path: Path) -> None:
    """Anything but a list of events is refused."""
    path = tmp_path / "t.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="JSON list"):
        read_cacofonisk_trace(path)


def test_real_cacofonisk_trace() -> None:
    """A real fixture reads as events with string values."""
    require_cacofonisk()
    events = read_cacofonisk_trace(CACOFONISK / "simple" / "ab_success_a_hangup.json")
    assert events and all(isinstance(v, str) for e in events for v in e.values())
    assert all("content" not in e for e in events)
