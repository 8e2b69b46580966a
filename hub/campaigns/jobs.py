"""What the engine's parts pass between them: a claimed delivery (`Job`), what it is sent for
(`Source`), and the two delivery tables it comes from.

The sending side (engine.py), the recording side (recording.py) and crash recovery
(recovery.py) all speak in these terms; they live here so that none of those modules has to
import another's internals (and the engine can import the other two without a cycle)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Table, select

from hub.campaigns.templates import CompiledTemplate
from hub.models.campaigns import CampaignDelivery, CampaignRun, TriggerDelivery

# Deliveries by kind: "c" rows of a campaign run, "t" rows of a trigger rule. Both have the
# claim columns (state, claimed_by, lease_until, attempts, in_doubt, message_id).
TABLES: dict[str, Table] = {
    "c": CampaignDelivery.__table__,  # type: ignore[dict-item]
    "t": TriggerDelivery.__table__,  # type: ignore[dict-item]
}


@dataclass(eq=False)
class Source:
    """A run or a trigger rule being sent: what every job of it shares."""

    key: str
    kind: str  # "c" campaign run | "t" trigger rule
    channel: str
    messenger: str
    template: CompiledTemplate
    template_stamp: tuple[int, datetime]
    from_address: str | None
    tz: ZoneInfo
    link_source: str  # "c<campaign id>" | "t<rule id>"
    name: str
    campaign_id: int | None = None
    run_id: int | None = None
    rule_id: int | None = None
    stopped: bool = False
    consecutive_errors: int = 0
    last_error: str = ""


@dataclass(slots=True, eq=False)
class Job:
    """One claimed delivery on its way out."""

    kind: str
    delivery_id: int
    attempt: int
    to: str
    message_id: str
    customer_id: int | None
    # What the template will see, put together when the message is rendered (engine.py):
    customer: dict[str, Any] | None  # as loaded at the claim (None: no customer)
    event: dict[str, Any] | None  # the event a triggered message answers
    claimed_at: datetime  # the template's "now" and "today"
    source: Source
    gen: int | None = None  # journal file generation once started
    in_doubt: bool = False  # handed over in full, the provider's answer lost: may have arrived


def claimed_by(kind: str, table: Table, worker_id: str) -> list[Any]:
    """Rows a worker holds; campaign rows through the (run, state) index of live runs."""
    where = [table.c.claimed_by == worker_id, table.c.state == "sending"]
    if kind == "c":
        where.append(
            table.c.run_id.in_(
                select(CampaignRun.id).where(
                    CampaignRun.status.in_(("sending", "paused", "cancelled"))
                )
            )
        )
    return where


def chunks(items: list[int], size: int) -> Iterable[list[int]]:
    """`items` in consecutive slices of at most `size` (ids per IN (...) list)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
