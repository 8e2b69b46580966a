"""Unit tests of the call tracker's rules, one hand-written event stream each."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest

from hub.telephony.model import CallAnswered, CallEnded, CallRinging, TrackerConfig
from hub.telephony.tracker import CallTracker, device_of, extension_of
from tests.hub.telephony.amisim import T0, Chan, Sim, simple_call

# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("channel", "device"),
    [
        ("PJSIP/201-0000000a", "PJSIP/201"),
        ("SIP/150010002-00000021", "SIP/150010002"),
        ("SIP/voipgrid-siproute-docker-00000017", "SIP/voipgrid-siproute-docker"),
        ("Local/100@agents-0000000a;1", "Local/100@agents"),
        ("Local/100@agents-0000000a;2", "Local/100@agents"),
        ("Local/+4930987654@pstn-remote-00000017;1", "Local/+4930987654@pstn-remote"),
        ("PJSIP/201", "PJSIP/201"),
        ("Local/4930555101@from-pstn", "Local/4930555101@from-pstn"),
    ],
)
def test_device_is_the_channel_without_its_suffix(channel: str, device: str) -> None:
    """A device is the channel name without `-<hex>` (and a Local's `;n`)."""
    assert device_of(channel) == device


@pytest.mark.parametrize(
    ("device", "extension"),
    [
        ("PJSIP/201", "201"),
        ("Local/100@agents", "100"),
        ("SIP/150010002", "150010002"),
        ("PJSIP/alice", None),
        ("SIP/voipgrid-siproute-docker", None),
    ],
)
def test_extension_comes_from_the_device(device: str, extension: str | None) -> None:
    """The extension is the numeric resource of the device, else None."""
    assert extension_of(device) == extension


# --------------------------------------------------------------------------- a plain call


def test_answered_inbound_call_emits_ringing_answered_and_one_record() -> None:
    """Ringing at DialBegin, answered at DialEnd ANSWER, one record at the last Hangup."""
    sim = Sim()
    simple_call(sim, ring_s=2.0, talk_s=3.0)
    ringing, answered = sim.ringing(), sim.answered()
    assert [(r.device, r.extension, r.caller, r.callee) for r in ringing] == [
        ("PJSIP/201", "201", "+4930123456", "4930555100")
    ]
    assert ringing[0].direction == "inbound" and ringing[0].at == T0
    assert [(a.device, a.at) for a in answered] == [("PJSIP/201", T0 + timedelta(seconds=2))]
    record = sim.record()
    assert record.direction == "inbound"
    assert record.caller == "+4930123456" and not record.caller_withheld
    assert record.callee == "4930555100"
    assert record.rang == ("PJSIP/201",) and record.answered_by == ("PJSIP/201",)
    assert record.disposition == "answered"
    assert record.started_at == T0
    assert record.answered_at == T0 + timedelta(seconds=2)
    assert record.ended_at == T0 + timedelta(seconds=5)
    assert record.wait_seconds == 2.0 and record.talk_seconds == 3.0
    assert record.hangup_cause == "16 Normal Clearing"
    assert record.caller_device == "PJSIP/trunk"
    assert len(sim.tracker) == 0 and sim.tracker.leg_count == 0


def test_call_ends_only_with_its_last_channel() -> None:
    """CallEnded waits for every channel of the Linkedid, however they leave."""
    sim = Sim()
    caller = sim.new("PJSIP/trunk-00000001", num="+4930123456", exten="4930555100")
    phone = sim.new("PJSIP/201-00000002", lid=caller.lid)
    sim.dial(caller, phone)
    sim.dial_end(caller, phone, "ANSWER")
    assert not [e for e in sim.hangup(caller) if isinstance(e, CallEnded)]
    assert len(sim.tracker) == 1
    ended = [e for e in sim.hangup(phone) if isinstance(e, CallEnded)]
    assert len(ended) == 1 and ended[0].record.linkedid == caller.lid


def test_missed_inbound_call_waits_until_the_end() -> None:
    """Nobody answers: missed, wait runs to the end, no talk."""
    sim = Sim()
    simple_call(sim, answer=False, ring_s=6.0)
    record = sim.record()
    assert record.disposition == "missed"
    assert record.answered_by == () and record.answered_at is None
    assert record.wait_seconds == 6.0 and record.talk_seconds == 0.0
    assert sim.answered() == []


# --------------------------------------------------------------------------- caller number


def test_trunk_caller_number_arrives_in_newcallerid() -> None:
    """Newchannel says <unknown>; the number comes with the next NewCallerid."""
    sim = Sim()
    caller = sim.new("PJSIP/trunk-00000001", exten="4930555100")
    sim.callerid(caller, "+4930123456", "Max Mustermann")
    phone = sim.new("PJSIP/201-00000002", lid=caller.lid)
    [ringing] = sim.dial(caller, phone)
    assert isinstance(ringing, CallRinging)
    assert ringing.caller == "+4930123456" and ringing.caller_name == "Max Mustermann"
    sim.hangup_all(phone, caller)
    assert sim.record().caller == "+4930123456"


@pytest.mark.parametrize(
    ("num", "pres"),
    [
        ("<unknown>", None),
        ("anonymous", None),
        ("Anonymous", None),
        ("", None),
        ("+4930123456", "32 (Presentation Prohibited, Not Screened)"),
        ("+4930123456", "35 (Presentation Prohibited, Network Number)"),
    ],
)
def test_withheld_caller_has_no_number(num: str, pres: str | None) -> None:
    """Unknown, anonymous, empty or presentation-restricted: caller None, withheld, no guess."""
    sim = Sim()
    caller = sim.new("PJSIP/trunk-00000001", exten="4930555100")
    sim.callerid(caller, num, "Max Mustermann", pres=pres)
    phone = sim.new("PJSIP/201-00000002", lid=caller.lid)
    phone.connected = "+4930999999"  # what a phone is shown must not leak a withheld number
    [ringing] = sim.dial(caller, phone)
    assert isinstance(ringing, CallRinging)
    assert ringing.caller is None and ringing.caller_name is None
    assert ringing.direction == "inbound"
    sim.hangup_all(phone, caller)
    record = sim.record()
    assert record.caller is None and record.caller_withheld and record.caller_name is None


def test_local_first_leg_takes_the_caller_from_its_other_half() -> None:
    """A routing Local ;1 without caller ID is paired with its ;2, which has it."""
    sim = Sim()
    first = sim.new("Local/ID1@route-00000001;1", exten="ID1")
    second = sim.new("Local/ID1@route-00000001;2", lid=first.lid, exten="ID1", state="4")
    sim.callerid(second, "201", "Alice")
    phone = sim.new("SIP/150010002-00000002", lid=first.lid)
    [ringing] = sim.dial(second, phone, dialstring="150010002")
    assert isinstance(ringing, CallRinging) and ringing.caller == "201"
    sim.hangup_all(phone, second, first)
    assert sim.record().caller == "201"


# --------------------------------------------------------------------------- who rang


def test_ring_group_pops_each_phone_once_in_dial_order() -> None:
    """A ring group rings several phones; each gets exactly one CallRinging."""
    sim = Sim()
    caller = sim.new("SIP/150010001-00000001", num="201", exten="401")
    legs = []
    for n, device in enumerate(("SIP/150010003", "SIP/150010002")):
        one, two = sim.local(f"Local/ID73015{n}@route-0000000{n}", lid=caller.lid)
        phone = sim.new(f"{device}-0000001{n}", lid=caller.lid)
        sim.dial(caller, one, dialstring=f"ID73015{n}@route")
        sim.dial(two, phone, dialstring=device[4:])
        legs.append((one, two, phone))
    sim.dial(legs[1][1], legs[1][2])  # a duplicate DialBegin changes nothing
    assert [r.device for r in sim.ringing()] == ["SIP/150010003", "SIP/150010002"]
    one, two, phone = legs[1]
    sim.dial_end(two, phone, "ANSWER")
    sim.dial_end(caller, one, "ANSWER")
    other = legs[0]
    sim.dial_end(other[1], other[2], "CANCEL")
    sim.dial_end(caller, other[0], "CANCEL")
    for chan in (*other, phone, two, one, caller):
        sim.hangup(chan)
    record = sim.record()
    assert record.rang == ("SIP/150010003", "SIP/150010002")
    assert record.answered_by == ("SIP/150010002",)
    assert record.direction == "internal" and record.callee == "401"
    assert record.disposition == "answered"


def test_local_routing_leg_is_not_rung_but_the_phone_behind_it_is() -> None:
    """Local/ channels are routing, not phones, unless known as agents' devices."""
    sim = Sim()
    caller = sim.new("PJSIP/trunk-00000001", num="+4930123456", exten="4930555100")
    one, two = sim.local("Local/ID9@route-00000001", lid=caller.lid)
    assert sim.dial(caller, one, dialstring="ID9@route") == []
    phone = sim.new("PJSIP/201-00000002", lid=caller.lid)
    [ringing] = sim.dial(two, phone, dialstring="201")
    assert isinstance(ringing, CallRinging)
    assert ringing.linkedid == caller.lid and ringing.device == "PJSIP/201"


def test_local_agent_device_counts_as_rung() -> None:
    """A Local channel listed in agent_devices is an agent's phone (asterisk22 style)."""
    sim = Sim.with_agents()
    caller = sim.new("Local/4930555100@from-pstn-00000000;2", num="+4930123456", exten="4930")
    one, _two = sim.local("Local/100@agents-00000001", lid=caller.lid)
    one.num, one.connected = "4930555100", "+4930123456"
    [ringing] = sim.dial(caller, one, dialstring="100@agents/n")
    assert isinstance(ringing, CallRinging)
    assert (ringing.device, ringing.extension) == ("Local/100@agents", "100")
    assert ringing.caller == "+4930123456"


def test_agent_devices_may_change_at_runtime() -> None:
    """A callable agent_devices is consulted when a device is dialled."""
    agents: set[str] = set()
    sim = Sim(CallTracker(TrackerConfig(agent_devices=lambda: agents)))
    caller = sim.new("PJSIP/trunk-00000001", num="+4930123456", exten="4930")
    one, _ = sim.local("Local/100@agents-00000001", lid=caller.lid)
    assert sim.dial(caller, one) == []
    agents.add("Local/101@agents")
    one, _ = sim.local("Local/101@agents-00000002", lid=caller.lid)
    assert [r.device for r in sim.dial(caller, one) if isinstance(r, CallRinging)] == [
        "Local/101@agents"
    ]


def test_queue_agent_called_pops_with_the_queue_name() -> None:
    """AgentCalled rings the member (once, even with the DialBegin that follows)."""
    sim = Sim.with_agents()
    caller = sim.new("PJSIP/trunk-00000001", num="+4930123456", exten="4930555200")
    sim.send({"Event": "QueueCallerJoin", **caller.fields(), "Queue": "support", "Position": "1"})
    one, two = sim.local("Local/200@agents-00000001", lid=caller.lid)
    sim.send({"Event": "AgentCalled", **caller.fields(), **one.fields("Dest"), "Queue": "support"})
    sim.dial(caller, one, dialstring="Local/200@agents/n")
    assert [(r.device, r.queue) for r in sim.ringing()] == [("Local/200@agents", "support")]
    sim.dial_end(caller, one, "ANSWER")
    sim.send({"Event": "AgentConnect", **caller.fields(), **one.fields("Dest"), "Queue": "support"})
    sim.hangup_all(two, one, caller)
    record = sim.record()
    assert record.queue == "support" and record.disposition == "answered"
    assert [a.device for a in sim.answered()] == ["Local/200@agents"]


# --------------------------------------------------------------------------- direction


def test_internal_call_between_two_extensions() -> None:
    """Both parties internal: internal."""
    sim = Sim()
    simple_call(sim, caller_channel="PJSIP/201-00000001", caller_num="201", exten="202")
    assert sim.record().direction == "internal"


def test_agent_phone_calling_out_is_outbound_even_with_an_external_cli() -> None:
    """The caller's device is an agent's: outbound, whatever CLI the dialplan presents."""
    sim = Sim(CallTracker(TrackerConfig(agent_devices=frozenset({"PJSIP/201"}))))
    simple_call(
        sim,
        caller_channel="PJSIP/201-00000001",
        caller_num="+4930555000",
        callee_device="PJSIP/trunk",
        exten="004930987654",
    )
    record = sim.record()
    assert record.direction == "outbound" and record.callee == "004930987654"
    assert record.caller_device == "PJSIP/201"


def test_custom_internal_pattern() -> None:
    """internal_pattern decides which numbers are ours."""
    tracker = CallTracker(TrackerConfig(internal_pattern=re.compile(r"^2\d\d$")))
    sim = Sim(tracker)
    simple_call(sim, caller_channel="PJSIP/301-00000001", caller_num="301", exten="202")
    assert sim.record().direction == "inbound"


def test_click_to_call_rings_the_agent_then_dials_out() -> None:
    """Originate to the agent's phone, then the outside number: outbound, callee is outside."""
    sim = Sim.with_agents({"PJSIP/110"})
    agent = sim.new("PJSIP/110-00000001", exten="110")
    sim.callerid(agent, "110", "Agent 110")
    [ring] = sim.dial(None, agent, dialstring="PJSIP/110")
    assert isinstance(ring, CallRinging)
    assert (ring.device, ring.direction, ring.callee) == ("PJSIP/110", "outbound", None)
    sim.tick(1)
    [picked] = sim.dial_end(None, agent, "ANSWER")
    assert isinstance(picked, CallAnswered) and picked.device == "PJSIP/110"
    trunk = sim.new("PJSIP/trunk-00000002", lid=agent.lid)
    [trunk_ring] = sim.dial(agent, trunk, dialstring="+4930987654@trunk")
    assert isinstance(trunk_ring, CallRinging) and trunk_ring.callee == "+4930987654"
    sim.tick(2)
    sim.dial_end(agent, trunk, "ANSWER")
    sim.send(
        {
            "Event": "OriginateResponse",
            "Response": "Success",
            "Uniqueid": agent.uid,
            "ActionID": "c2c-1",
            "Channel": agent.channel,
        }
    )
    sim.tick(4)
    sim.hangup_all(trunk, agent)
    record = sim.record()
    assert record.direction == "outbound"
    assert record.caller == "110" and record.callee == "+4930987654"
    assert record.caller_device == "PJSIP/110"
    # The agent's own phone is the caller's device: never "rang", never "answered the call".
    assert record.rang == ("PJSIP/trunk",) and record.answered_by == ("PJSIP/trunk",)
    assert record.disposition == "answered"
    assert record.wait_seconds == 3.0 and record.talk_seconds == 4.0
    assert record.originate_id == "c2c-1"


def test_click_to_call_not_picked_up_by_the_agent_failed() -> None:
    """The originate's own leg never answered: failed, nothing rang on the called side."""
    sim = Sim.with_agents({"PJSIP/110"})
    agent = sim.new("PJSIP/110-00000001", num="110", exten="110")
    sim.dial(None, agent)
    sim.tick(30)
    sim.dial_end(None, agent, "NOANSWER")
    sim.hangup(agent, "19", "User alerting, no answer")
    record = sim.record()
    assert record.disposition == "failed" and record.rang == () and record.answered_by == ()


def test_originate_through_a_routing_channel_finds_the_originator_afterwards() -> None:
    """Originate to a routing Local: the phone answered before the dial-out is the caller's."""
    sim = Sim()
    one = sim.new("Local/ID4@ctd-00000005;1", exten="ID4")
    two = sim.new("Local/ID4@ctd-00000005;2", lid=one.lid, exten="ID4", state="4")
    sim.dial(None, one, dialstring="ID4@ctd/n")
    sim.callerid(two, "201")
    own = sim.new("SIP/150010001-00000002", lid=one.lid)
    sim.callerid(own, "201")
    sim.dial(two, own, dialstring="150010001")
    sim.dial_end(two, own, "ANSWER")
    sim.dial_end(None, one, "ANSWER")
    far = sim.new("SIP/150010002-00000003", lid=one.lid)
    sim.dial(one, far, dialstring="202@internal")
    sim.tick(1)
    sim.dial_end(one, far, "ANSWER")
    sim.tick(5)
    sim.hangup_all(far, own, two, one)
    record = sim.record()
    assert record.caller == "201" and record.callee == "202"
    assert record.caller_device == "SIP/150010001"
    assert record.rang == ("SIP/150010002",) and record.answered_by == ("SIP/150010002",)
    assert record.direction == "internal" and record.talk_seconds == 5.0


# --------------------------------------------------------------------------- dispositions


def test_busy_from_dial_status() -> None:
    """DialStatus BUSY and no answer: busy."""
    sim = Sim()
    caller = sim.new("PJSIP/201-00000001", num="201", exten="202")
    phone = sim.new("PJSIP/202-00000002", lid=caller.lid)
    sim.dial(caller, phone)
    sim.dial_end(caller, phone, "BUSY")
    sim.hangup(phone, "17", "User busy")
    sim.hangup(caller, "17", "User busy")
    record = sim.record()
    assert record.disposition == "busy" and record.hangup_cause == "17 User busy"
    assert record.rang == ("PJSIP/202",)


def test_busy_from_cause_17_without_dial_end() -> None:
    """A dialled phone that hangs up with cause 17 (DialEnd lost) makes the call busy."""
    sim = Sim()
    caller = sim.new("PJSIP/201-00000001", num="201", exten="202")
    phone = sim.new("PJSIP/202-00000002", lid=caller.lid)
    sim.dial(caller, phone)
    sim.hangup(phone, "17", "User busy")
    sim.hangup(caller, "16", "Normal Clearing")
    assert sim.record().disposition == "busy"


def test_busy_and_no_answer_in_a_group_is_missed() -> None:
    """One phone busy, another not answering: someone could have answered, so missed."""
    sim = Sim()
    caller = sim.new("PJSIP/201-00000001", num="201", exten="401")
    a = sim.new("PJSIP/202-00000002", lid=caller.lid)
    b = sim.new("PJSIP/203-00000003", lid=caller.lid)
    sim.dial(caller, a)
    sim.dial(caller, b)
    sim.dial_end(caller, a, "BUSY")
    sim.dial_end(caller, b, "NOANSWER")
    sim.hangup_all(a, b, caller)
    assert sim.record().disposition == "missed"


@pytest.mark.parametrize("status", ["CHANUNAVAIL", "CONGESTION"])
def test_unreachable_destination_failed(status: str) -> None:
    """CHANUNAVAIL / CONGESTION only: failed."""
    sim = Sim()
    caller = sim.new("PJSIP/201-00000001", num="201", exten="202")
    phone = sim.new("PJSIP/202-00000002", lid=caller.lid)
    sim.dial(caller, phone)
    sim.dial_end(caller, phone, status)
    sim.hangup_all(phone, caller)
    assert sim.record().disposition == "failed"


def test_outbound_call_that_never_dialled_failed_but_inbound_is_missed() -> None:
    """No dial at all: an internal caller's attempt failed; an outside caller was missed."""
    sim = Sim()
    caller = sim.new("PJSIP/201-00000001", num="201", exten="*97")
    sim.hangup(caller)
    sim2 = Sim()
    trunk = sim2.new("PJSIP/trunk-00000001", num="+4930123456", exten="4930555100")
    sim2.hangup(trunk)
    assert sim.record().disposition == "failed"
    assert sim2.record().disposition == "missed"


def test_local_answer_to_an_internal_destination_is_not_an_answer() -> None:
    """Voicemail behind a routing Local answers the dial, but nobody talked: missed."""
    sim = Sim()
    caller = sim.new("PJSIP/trunk-00000001", num="+4930123456", exten="4930555100")
    one, two = sim.local("Local/vm201@voicemail-00000001", lid=caller.lid)
    sim.dial(caller, one, dialstring="vm201@voicemail")
    sim.dial_end(caller, one, "ANSWER")
    sim.tick(20)
    sim.hangup_all(two, one, caller)
    record = sim.record()
    assert record.disposition == "missed" and record.answered_at is None


@pytest.mark.parametrize("how", ["abandon", "leave"])
def test_caller_leaving_the_queue_unanswered_abandoned(how: str) -> None:
    """QueueCallerAbandon, or QueueCallerLeave without AgentConnect: abandoned."""
    sim = Sim.with_agents()
    caller = sim.new("PJSIP/trunk-00000001", num="+4930123456", exten="4930555200")
    sim.send({"Event": "QueueCallerJoin", **caller.fields(), "Queue": "support"})
    one, two = sim.local("Local/200@agents-00000001", lid=caller.lid)
    sim.send({"Event": "AgentCalled", **caller.fields(), **one.fields("Dest"), "Queue": "support"})
    sim.dial(caller, one)
    sim.tick(11)
    sim.dial_end(caller, one, "CANCEL")
    event = "QueueCallerAbandon" if how == "abandon" else "QueueCallerLeave"
    sim.send({"Event": event, **caller.fields(), "Queue": "support"})
    sim.hangup_all(one, two, caller)
    record = sim.record()
    assert record.disposition == "abandoned" and record.queue == "support"
    assert record.rang == ("Local/200@agents",) and record.wait_seconds == 11.0


def test_blind_transfer_records_who_handed_over_to_whom() -> None:
    """Answered, blind-transferred, answered by the target: transferred, target popped."""
    sim = Sim()
    caller = sim.new("PJSIP/trunk-00000001", num="+4930123456", exten="4930555100")
    first = sim.new("PJSIP/201-00000002", lid=caller.lid)
    sim.dial(caller, first)
    sim.dial_end(caller, first, "ANSWER")
    sim.send(
        {
            "Event": "BlindTransfer",
            "Result": "Success",
            "TransfererChannel": first.channel,
            "TransfererUniqueid": first.uid,
            "TransfereeChannel": caller.channel,
            "TransfereeUniqueid": caller.uid,
            "TransfereeLinkedid": caller.lid,
            "Extension": "202",
            "IsExternal": "No",
        }
    )
    sim.hangup(first)
    second = sim.new("PJSIP/202-00000003", lid=caller.lid)
    [ringing] = sim.dial(caller, second, dialstring="202")
    assert isinstance(ringing, CallRinging) and ringing.device == "PJSIP/202"
    sim.dial_end(caller, second, "ANSWER")
    sim.hangup_all(second, caller)
    record = sim.record()
    assert record.disposition == "transferred"
    assert record.answered_by == ("PJSIP/201", "PJSIP/202")
    [transfer] = record.transfers
    assert (transfer.kind, transfer.from_device, transfer.to_device, transfer.to_number) == (
        "blind",
        "PJSIP/201",
        "PJSIP/202",
        "202",
    )


def test_transfer_back_to_a_phone_that_rang_before_pops_it_again() -> None:
    """A transfer starts a new ringing phase: a device rung earlier is popped once more."""
    sim = Sim()
    caller = sim.new("PJSIP/trunk-00000001", num="+4930123456", exten="4930555100")
    a = sim.new("PJSIP/201-00000002", lid=caller.lid)
    b = sim.new("PJSIP/202-00000003", lid=caller.lid)
    sim.dial(caller, a)
    sim.dial(caller, b)
    sim.dial_end(caller, a, "ANSWER")
    sim.dial_end(caller, b, "CANCEL")
    sim.hangup(b)
    sim.send(
        {
            "Event": "BlindTransfer",
            "Result": "Success",
            "TransfererChannel": a.channel,
            "TransfererUniqueid": a.uid,
            "TransfereeUniqueid": caller.uid,
            "TransfereeLinkedid": caller.lid,
            "Extension": "202",
        }
    )
    sim.hangup(a)
    b2 = sim.new("PJSIP/202-00000004", lid=caller.lid)
    sim.dial(caller, b2)
    assert [r.device for r in sim.ringing()] == ["PJSIP/201", "PJSIP/202", "PJSIP/202"]
    sim.hangup_all(b2, caller)
    assert sim.record().rang == ("PJSIP/201", "PJSIP/202")


def _consultation(sim: Sim) -> tuple[Chan, Chan, Chan, Chan]:
    """Caller talks to 201; 201 calls 202 on a second line (a second Linkedid)."""
    caller = sim.new("PJSIP/trunk-00000001", num="+4930123456", exten="4930555100")
    a1 = sim.new("PJSIP/201-00000002", lid=caller.lid)
    sim.dial(caller, a1)
    sim.dial_end(caller, a1, "ANSWER")
    a2 = sim.new("PJSIP/201-00000003", num="201", exten="202")
    b = sim.new("PJSIP/202-00000004", lid=a2.lid)
    sim.dial(a2, b, dialstring="202")
    return caller, a1, a2, b


def test_attended_transfer_moves_the_target_into_the_original_call() -> None:
    """201 consults 202 then transfers: both calls are logged once, the transfer on the first."""
    sim = Sim()
    caller, a1, a2, b = _consultation(sim)
    sim.dial_end(a2, b, "ANSWER")
    sim.send(
        {
            "Event": "AttendedTransfer",
            "Result": "Success",
            "DestType": "Bridge",
            "OrigTransfererChannel": a1.channel,
            "OrigTransfererUniqueid": a1.uid,
            "OrigTransfererLinkedid": caller.lid,
            "SecondTransfererChannel": a2.channel,
            "SecondTransfererUniqueid": a2.uid,
            "SecondTransfererLinkedid": a2.lid,
            "SecondTransfererExten": "202",
        }
    )
    sim.hangup(a2)
    sim.hangup(a1)
    # Asterisk re-links the target to the original call; it shows in its next event.
    b.lid = caller.lid
    sim.send({"Event": "BridgeLeave", **b.fields(), "BridgeUniqueid": "x"})
    second = [r for r in sim.records() if r.linkedid == a2.lid]
    assert len(second) == 1 and second[0].answered_by == ("PJSIP/202",)
    assert second[0].disposition == "answered" and second[0].transfers == ()
    sim.hangup_all(b, caller)
    first = [r for r in sim.records() if r.linkedid == caller.lid]
    assert len(first) == 1
    assert first[0].disposition == "transferred" and first[0].answered_by == ("PJSIP/201",)
    [transfer] = first[0].transfers
    assert (transfer.kind, transfer.from_device, transfer.to_device, transfer.to_number) == (
        "attended",
        "PJSIP/201",
        "PJSIP/202",
        "202",
    )
    assert len(sim.tracker) == 0 and sim.tracker.leg_count == 0


def test_blonde_transfer_names_the_still_ringing_target() -> None:
    """Transferring while the consulted phone still rings is a blonde transfer."""
    sim = Sim()
    caller, a1, a2, b = _consultation(sim)
    sim.send(
        {
            "Event": "AttendedTransfer",
            "Result": "Success",
            "DestType": "App",
            "DestApp": "Dial",
            "OrigTransfererChannel": a1.channel,
            "OrigTransfererUniqueid": a1.uid,
            "OrigTransfererLinkedid": caller.lid,
            "SecondTransfererChannel": a2.channel,
            "SecondTransfererUniqueid": a2.uid,
            "SecondTransfererLinkedid": a2.lid,
        }
    )
    sim.hangup_all(a1, a2, b, caller)
    first = next(r for r in sim.records() if r.linkedid == caller.lid)
    [transfer] = first.transfers
    assert (transfer.kind, transfer.from_device, transfer.to_device) == (
        "blonde",
        "PJSIP/201",
        "PJSIP/202",
    )
    assert transfer.to_number == "202"


def test_failed_transfer_is_not_recorded() -> None:
    """A transfer whose Result is not Success changes nothing."""
    sim = Sim()
    caller, first = simple_call_parts(sim)
    sim.send(
        {
            "Event": "BlindTransfer",
            "Result": "Fail",
            "TransfererChannel": first.channel,
            "TransfereeUniqueid": caller.uid,
            "Extension": "999",
        }
    )
    sim.hangup_all(first, caller)
    record = sim.record()
    assert record.transfers == () and record.disposition == "answered"


def simple_call_parts(sim: Sim) -> tuple[Chan, Chan]:
    """An answered call left up (not hung up)."""
    caller = sim.new("PJSIP/trunk-00000001", num="+4930123456", exten="4930555100")
    phone = sim.new("PJSIP/201-00000002", lid=caller.lid)
    sim.dial(caller, phone)
    sim.dial_end(caller, phone, "ANSWER")
    return caller, phone


# --------------------------------------------------------------------------- recording, CDR


def test_recording_from_mixmonitor_filename() -> None:
    """VarSet MIXMONITOR_FILENAME names the recording; other VarSets are ignored."""
    sim = Sim()
    caller, phone = simple_call_parts(sim)
    assert (
        sim.send({"Event": "VarSet", **caller.fields(), "Variable": "BRIDGEPEER", "Value": "x"})
        == []
    )
    sim.send(
        {
            "Event": "VarSet",
            **caller.fields(),
            "Variable": "MIXMONITOR_FILENAME",
            "Value": "/var/spool/asterisk/monitor/a.wav",
        }
    )
    sim.hangup_all(phone, caller)
    assert sim.record().recording == "/var/spool/asterisk/monitor/a.wav"


def test_recording_from_the_mixmonitor_application_when_no_variable() -> None:
    """Newexten running MixMonitor gives the file name (options stripped)."""
    sim = Sim()
    caller, phone = simple_call_parts(sim)
    sim.send(
        {
            "Event": "Newexten",
            **caller.fields(),
            "Application": "MixMonitor",
            "AppData": "/var/spool/rec/x.wav,b",
        }
    )
    sim.hangup_all(phone, caller)
    assert sim.record().recording == "/var/spool/rec/x.wav"


def test_cdr_fills_a_missing_answer_but_never_doubles() -> None:
    """A Cdr ANSWERED for a leg whose DialEnd got lost counts once; a second Cdr adds nothing."""
    sim = Sim()
    caller = sim.new("PJSIP/trunk-00000001", num="+4930123456", exten="4930555100")
    phone = sim.new("PJSIP/201-00000002", lid=caller.lid)
    sim.dial(caller, phone)
    cdr = {
        "Event": "Cdr",
        "UniqueID": caller.uid,
        "Channel": caller.channel,
        "DestinationChannel": phone.channel,
        "Disposition": "ANSWERED",
        "Source": "+4930123456",
    }
    sim.send(cdr)
    sim.send(cdr)
    sim.hangup_all(phone, caller)
    record = sim.record()
    assert record.answered_by == ("PJSIP/201",) and len(sim.answered()) == 1


def test_cdr_after_a_seen_answer_adds_nothing() -> None:
    """With the DialEnd seen, the CDR is redundant."""
    sim = Sim()
    caller, phone = simple_call_parts(sim)
    sim.send(
        {
            "Event": "Cdr",
            "UniqueID": caller.uid,
            "DestinationChannel": phone.channel,
            "Disposition": "ANSWERED",
        }
    )
    sim.hangup_all(phone, caller)
    assert sim.record().answered_by == ("PJSIP/201",) and len(sim.answered()) == 1


def test_cdr_supplies_a_caller_number_never_seen() -> None:
    """A caller leg without any caller ID takes the CDR's Source."""
    sim = Sim()
    caller = sim.new("PJSIP/trunk-00000001", exten="4930555100")
    sim.send(
        {
            "Event": "Cdr",
            "UniqueID": caller.uid,
            "Source": "+4930123456",
            "Disposition": "NO ANSWER",
        }
    )
    sim.hangup(caller)
    assert sim.record().caller == "+4930123456"


# --------------------------------------------------------------------------- robustness


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"Event": "CEL", "EventName": "CHAN_START"},
        {"Event": "DeviceStateChange", "Device": "PJSIP/201", "State": "INUSE"},
        {"Event": "SomethingNew", "Uniqueid": "x", "Linkedid": "x"},
        {"Response": "Success", "ActionID": "1"},
        {"Event": "Newchannel"},
        {"Event": "Newchannel", "Uniqueid": "u1"},
        {"Event": "DialBegin", "Uniqueid": "u1"},
        {"Event": "DialEnd", "DestUniqueid": "nope", "DialStatus": "ANSWER"},
        {"Event": "Hangup", "Uniqueid": "never-seen", "Cause": "16"},
        {"Event": "BlindTransfer", "Result": "Success"},
        {"Event": "AttendedTransfer", "Result": "Success"},
        {"Event": "LocalBridge"},
        {"Event": "AgentCalled", "Queue": "q"},
        {"Event": "Cdr"},
        {"Event": "VarSet", "Variable": "MIXMONITOR_FILENAME", "Value": "/x.wav"},
        {"Event": "CoreShowChannel", "Uniqueid": "u9"},
        {"Event": ["DialBegin", "DialBegin"]},  # a header sent twice (panoramisk makes lists)
        {"Event": "Newstate", "Uniqueid": ["a", "b"]},
    ],
)
def test_malformed_or_unknown_events_are_ignored(event: dict[str, object]) -> None:
    """Never raises, emits nothing, keeps no state for junk."""
    tracker = CallTracker(TrackerConfig())
    assert tracker.handle(event, T0) == []  # type: ignore[arg-type]
    assert len(tracker) == 0 and tracker.leg_count == 0


def test_ignored_events_leave_a_running_call_untouched() -> None:
    """Noise between real events changes nothing in the record."""
    quiet, noisy = Sim(), Sim()
    for sim in (quiet, noisy):
        caller = sim.new("PJSIP/trunk-00000001", num="+4930123456", exten="4930555100")
        if sim is noisy:
            for name in ("CEL", "Newexten", "VarSet", "DeviceStateChange", "RTCPSent", "DialState"):
                sim.send({"Event": name, **caller.fields(), "Variable": "X", "Value": "1"})
        sim.hangup(caller)
    assert quiet.record() == noisy.record()


def test_every_event_twice_gives_the_same_calls() -> None:
    """Duplicated events (a replay, a resent frame) must not double rings, answers or calls."""
    once = Sim()
    simple_call(once)
    blind_transfer_call(once)
    twice = CallTracker(TrackerConfig())
    effects = []
    for at, event in once.sent:
        effects += twice.handle(event, at)
        effects += twice.handle(dict(event), at)
    assert effects == once.effects
    assert twice.internal_errors == 0


def blind_transfer_call(sim: Sim) -> None:
    """201 answers, blind-transfers to 202, who answers."""
    caller = sim.new("PJSIP/trunk-00000011", num="+4930123456", exten="4930555100")
    first = sim.new("PJSIP/201-00000012", lid=caller.lid)
    sim.dial(caller, first)
    sim.dial_end(caller, first, "ANSWER")
    sim.send(
        {
            "Event": "BlindTransfer",
            "Result": "Success",
            "TransfererChannel": first.channel,
            "TransfererUniqueid": first.uid,
            "TransfereeUniqueid": caller.uid,
            "TransfereeLinkedid": caller.lid,
            "Extension": "202",
        }
    )
    sim.hangup(first)
    second = sim.new("PJSIP/202-00000013", lid=caller.lid)
    sim.dial(caller, second)
    sim.dial_end(caller, second, "ANSWER")
    sim.hangup_all(second, caller)


def test_events_of_an_unknown_call_are_adopted() -> None:
    """Started mid-call (no Newchannel seen): the call is adopted and still logged once."""
    sim = Sim()
    caller = Chan("PJSIP/trunk-00000001", "u-1", "u-1", num="+4930123456", exten="4930555100")
    phone = Chan("PJSIP/201-00000002", "u-2", "u-1", connected="+4930123456")
    [ringing] = sim.dial(caller, phone)
    assert isinstance(ringing, CallRinging) and ringing.caller == "+4930123456"
    sim.dial_end(caller, phone, "ANSWER")
    sim.hangup_all(phone, caller)
    record = sim.record()
    assert record.linkedid == "u-1" and record.answered_by == ("PJSIP/201",)


def test_late_events_after_the_end_do_not_revive_a_call() -> None:
    """Events after the last Hangup (a Cdr, a NewConnectedLine, a repeated Hangup) are dropped."""
    sim = Sim()
    caller, phone = simple_call(sim)
    sim.send({"Event": "NewConnectedLine", **phone.fields()})
    sim.hangup(caller)
    sim.send({"Event": "Newstate", **caller.fields()})
    assert len(sim.records()) == 1
    assert len(sim.tracker) == 0 and sim.tracker.leg_count == 0


def test_event_about_a_hung_up_channel_of_a_running_call_is_ignored() -> None:
    """Asterisk may send a NewConnectedLine after a channel's Hangup; the call still ends."""
    sim = Sim()
    caller = sim.new("PJSIP/trunk-00000001", num="+4930123456", exten="4930555100")
    phone = sim.new("PJSIP/201-00000002", lid=caller.lid)
    sim.dial(caller, phone)
    sim.dial_end(caller, phone, "NOANSWER")
    sim.hangup(phone)
    sim.send({"Event": "NewConnectedLine", **phone.fields()})
    sim.hangup(caller)
    assert len(sim.records()) == 1 and sim.tracker.leg_count == 0


def test_memory_is_released_after_calls_end() -> None:
    """Thousands of calls leave no legs or calls behind; the memory of ended ids is bounded."""
    sim = Sim()
    for _ in range(6000):
        simple_call(sim, ring_s=0, talk_s=0)
    assert len(sim.records()) == 6000
    assert len(sim.tracker) == 0 and sim.tracker.leg_count == 0
    assert len(sim.tracker._ended) <= 4096 and len(sim.tracker._gone) <= 16384
    assert not sim.tracker._local_ones


def test_naive_datetimes_are_taken_as_utc() -> None:
    """A naive receipt time must not leak into records as naive."""
    tracker = CallTracker(TrackerConfig())
    chan = Chan("PJSIP/trunk-00000001", "u-1", "u-1", num="+4930123456")
    naive = datetime(2025, 3, 1, 9, 0, 0)  # noqa: DTZ001 - the point of the test
    tracker.handle({"Event": "Newchannel", **chan.fields()}, naive)
    [ended] = tracker.handle({"Event": "Hangup", **chan.fields(), "Cause": "16"}, naive)
    assert isinstance(ended, CallEnded) and ended.record.started_at.tzinfo is not None


# --------------------------------------------------------------------------- resync, live view


def test_resync_ends_vanished_calls_and_adopts_unknown_ones() -> None:
    """After a reconnect: a call without live channels ends at `at`; a new one is adopted."""
    sim = Sim()
    caller, _phone = simple_call_parts(sim)
    later = T0 + timedelta(seconds=60)
    snapshot = [
        {
            "Event": "CoreShowChannel",
            "Channel": "PJSIP/trunk-00000009",
            "Uniqueid": "n-1",
            "Linkedid": "n-1",
            "CallerIDNum": "+4930777777",
            "CallerIDName": "Erika",
            "ConnectedLineNum": "4930555100",
            "Exten": "4930555100",
            "ChannelState": "6",
            "Duration": "00:00:30",
            "BridgeId": "b-9",
        },
        {
            "Event": "CoreShowChannel",
            "Channel": "PJSIP/202-0000000a",
            "Uniqueid": "n-2",
            "Linkedid": "n-1",
            "CallerIDNum": "4930555100",
            "ConnectedLineNum": "+4930777777",
            "ChannelState": "6",
            "Duration": "00:00:20",
            "BridgeId": "b-9",
        },
        {
            "Event": "CoreShowChannel",
            "Channel": "PJSIP/203-0000000b",
            "Uniqueid": "n-3",
            "Linkedid": "n-1",
            "CallerIDNum": "4930555100",
            "ConnectedLineNum": "+4930777777",
            "ChannelState": "5",
            "Duration": "00:00:02",
        },
    ]
    effects = sim.tracker.resync(snapshot, later)
    [ended] = [e for e in effects if isinstance(e, CallEnded)]
    assert ended.record.linkedid == caller.lid and ended.record.ended_at == later
    assert ended.record.answered_by == ("PJSIP/201",)
    assert [(type(e).__name__, getattr(e, "device", None)) for e in effects[1:]] == [
        ("CallAnswered", "PJSIP/202"),
        ("CallRinging", "PJSIP/203"),
    ]
    [live] = sim.tracker.live_calls()
    assert live.linkedid == "n-1" and live.caller == "+4930777777" and live.state == "up"
    assert live.started_at == later - timedelta(seconds=30)
    assert live.devices == ("PJSIP/trunk", "PJSIP/202", "PJSIP/203")
    end = [
        e for e in sim.tracker.resync([], later + timedelta(seconds=5)) if isinstance(e, CallEnded)
    ]
    assert [e.record.linkedid for e in end] == ["n-1"]
    assert end[0].record.answered_by == ("PJSIP/202",) and end[0].record.caller == "+4930777777"
    assert len(sim.tracker) == 0 and sim.tracker.leg_count == 0


def test_resync_of_an_agent_leg_alone_takes_the_caller_from_its_connected_line() -> None:
    """Only the agent's leg is live: its ConnectedLineNum is the caller (CallerIDNum is the DID)."""
    tracker = CallTracker(TrackerConfig(agent_devices=frozenset({"Local/100@agents"})))
    effects = tracker.resync(
        [
            {
                "Channel": "Local/100@agents-00000001;1",
                "Uniqueid": "x-2",
                "Linkedid": "x-1",
                "CallerIDNum": "4930555100",
                "ConnectedLineNum": "+4930123456",
                "ChannelState": "5",
            }
        ],
        T0,
    )
    [ringing] = effects
    assert isinstance(ringing, CallRinging)
    assert ringing.caller == "+4930123456" and ringing.device == "Local/100@agents"


def test_resync_keeps_calls_that_are_still_live() -> None:
    """Known channels in the snapshot keep their call running and emit nothing."""
    sim = Sim()
    caller, phone = simple_call_parts(sim)
    snapshot = [
        {"Uniqueid": caller.uid, "Linkedid": caller.lid, "Channel": caller.channel},
        {"Uniqueid": phone.uid, "Linkedid": caller.lid, "Channel": phone.channel},
    ]
    assert sim.tracker.resync(snapshot, T0) == []
    assert len(sim.tracker) == 1 and sim.tracker.leg_count == 2


def test_live_calls_follow_ringing_then_up() -> None:
    """The wallboard view: ringing until answered, then up; gone when ended."""
    sim = Sim()
    caller = sim.new("PJSIP/trunk-00000001", num="+4930123456", exten="4930555100")
    phone = sim.new("PJSIP/201-00000002", lid=caller.lid)
    sim.dial(caller, phone)
    [live] = sim.tracker.live_calls()
    assert (live.state, live.caller, live.direction, live.answered_at) == (
        "ringing",
        "+4930123456",
        "inbound",
        None,
    )
    assert live.devices == ("PJSIP/trunk", "PJSIP/201") and live.callee == "4930555100"
    sim.tick(2)
    sim.dial_end(caller, phone, "ANSWER")
    [live] = sim.tracker.live_calls()
    assert live.state == "up" and live.answered_at == T0 + timedelta(seconds=2)
    sim.hangup_all(phone, caller)
    assert sim.tracker.live_calls() == []


def test_pickup_answers_on_behalf_of_the_picking_phone() -> None:
    """Call pickup: the phone that picked up is the one that answered."""
    sim = Sim()
    caller = sim.new("PJSIP/trunk-00000001", num="+4930123456", exten="4930555100")
    rung = sim.new("PJSIP/201-00000002", lid=caller.lid)
    sim.dial(caller, rung)
    picker = sim.new("PJSIP/202-00000003", num="202", exten="*8")
    sim.send(
        {
            "Event": "Pickup",
            **picker.fields(),
            "TargetChannel": rung.channel,
            "TargetUniqueid": rung.uid,
            "TargetLinkedid": caller.lid,
        }
    )
    sim.dial_end(caller, rung, "ANSWER")
    sim.hangup_all(rung, caller)
    record = next(r for r in sim.records() if r.linkedid == caller.lid)
    assert record.answered_by == ("PJSIP/202",) and record.disposition == "answered"


def test_attended_transfer_names_the_target_asterisk_reports() -> None:
    """With TransferTargetChannel in the event (Asterisk 16+), that channel is the target."""
    sim = Sim()
    caller, a1, a2, b = _consultation(sim)
    sim.dial_end(a2, b, "ANSWER")
    sim.send(
        {
            "Event": "AttendedTransfer",
            "Result": "Success",
            "DestType": "Bridge",
            "OrigTransfererChannel": a1.channel,
            "OrigTransfererLinkedid": caller.lid,
            "SecondTransfererChannel": a2.channel,
            "SecondTransfererLinkedid": a2.lid,
            "TransferTargetChannel": "PJSIP/209-0000000f",
        }
    )
    sim.hangup_all(a1, a2, b, caller)
    first = next(r for r in sim.records() if r.linkedid == caller.lid)
    [transfer] = first.transfers
    assert transfer.to_device == "PJSIP/209"
    assert set(transfer.to_devices) == {"PJSIP/202", "PJSIP/209"}


def test_channel_moving_into_an_ended_call_is_forgotten() -> None:
    """A Linkedid is reported once: a channel re-linked to a finished call is dropped."""
    sim = Sim()
    simple_call(sim)
    done = sim.record().linkedid
    stray = sim.new("PJSIP/209-00000009", num="209", exten="300")
    stray.lid = done
    sim.send({"Event": "Newstate", **stray.fields()})
    assert [r.linkedid for r in sim.records()] == [done, stray.uid]
    assert len(sim.tracker) == 0 and sim.tracker.leg_count == 0
