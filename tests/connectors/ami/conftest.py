"""Fixtures for the AMI connector tests: a recording sink, a fake AMI server, settings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.ami import AmiSettings

from .fake_ami import FakeAmi


class RecordingSink:
    """Our own PbxEventSink that keeps everything it is given, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    async def on_event(self, event: Mapping[str, str], at: datetime) -> None:
        """Record one event (a plain dict, stamped in UTC)."""
        assert type(event) is dict
        assert at.tzinfo is UTC
        self.log.append(("event", event))

    async def on_resync(self, channels: Sequence[Mapping[str, str]], at: datetime) -> None:
        """Record a snapshot."""
        assert at.tzinfo is UTC
        self.log.append(("resync", [dict(c) for c in channels]))

    async def on_link(self, up: bool, reason: str) -> None:
        """Record a link change."""
        self.log.append(("link", up, reason))

    @property
    def events(self) -> list[dict[str, str]]:
        """The events only."""
        return [entry[1] for entry in self.log if entry[0] == "event"]

    def named(self, name: str) -> list[dict[str, str]]:
        """The events with this Event name."""
        return [e for e in self.events if e.get("Event") == name]

    @property
    def links(self) -> list[bool]:
        """The link states, in order."""
        return [entry[1] for entry in self.log if entry[0] == "link"]

    @property
    def resyncs(self) -> list[list[dict[str, str]]]:
        """The snapshots, in order."""
        return [entry[1] for entry in self.log if entry[0] == "resync"]


async def eventually(
    check: Callable[[], bool], what: str = "condition", within: float = 10.0
) -> None:
    """Wait until check() holds; fail with `what` if it never does (not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def sink() -> RecordingSink:
    """A fresh recording sink."""
    return RecordingSink()


@pytest.fixture
async def fake() -> AsyncIterator[FakeAmi]:
    """A fake AMI server on a free loopback port."""
    async with FakeAmi() as server:
        yield server


def settings_for(port: int, **overrides: Any) -> AmiSettings:
    """Settings with short timers, so the tests run in well under a second each."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "username": "hub",
        "secret": "hubsecret",
        "ping_interval": 0.2,
        "ping_timeout": 0.2,
        "reconnect_min": 0.02,
        "reconnect_max": 0.2,
        "connect_timeout": 2.0,
        "action_timeout": 2.0,
    }
    values.update(overrides)
    return AmiSettings(**values)
