"""Load generation: many concurrent calls of mixed scenarios still form consistent streams."""

from __future__ import annotations

import pytest

from connectors.pbxsim import PbxSimulator
from tests.connectors.pbxsim.conftest import AmiClient
from tests.connectors.pbxsim.test_scenarios import check_consistency, events


async def test_mixed_load_interleaves_consistently(sim: PbxSimulator, client: AmiClient) -> None:
    started = await sim.run_load(400, duration=0.1, seed=7, ring=0.02, talk=0.03)
    await sim.wait_idle()
    frames = await client.sync()
    names = check_consistency(frames)
    first_channels = {f.get("Linkedid") for f in events(frames, "Newchannel")}
    assert started >= 10
    assert len(first_channels) >= started  # attended transfers add a consult Linkedid each
    assert len(names) > 2 * started
    kinds = {f.get("Event") for f in frames}
    assert {"BlindTransfer", "AttendedTransfer", "AgentConnect", "OriginateResponse"} <= kinds
    assert sim.calls_placed == started


async def test_load_of_one_scenario(sim: PbxSimulator, client: AmiClient) -> None:
    started = await sim.run_load(300, "busy", duration=0.05, ring=0.0)
    await sim.wait_idle()
    frames = await client.sync()
    check_consistency(frames)
    statuses = [f.get("DialStatus") for f in events(frames, "DialEnd")]
    assert statuses == ["BUSY"] * started
    with pytest.raises(ValueError, match="positive"):
        await sim.run_load(0)
