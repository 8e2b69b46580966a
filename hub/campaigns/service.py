"""Campaign service functions: templates, segments, campaigns, schedules, runs, trigger rules.

The web layer calls these; the engine reads what they write. Every state change is a database
write (the scheduler trusts the database, not memory), so any process may make it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.campaigns.context import load_customers, message_context
from hub.campaigns.schedule import Cron, next_fire, zone
from hub.campaigns.segments import Clock, count_matching, validate_filter
from hub.campaigns.templates import (
    CHANNEL_PARTS,
    CompiledTemplate,
    Rendered,
    sample_context,
    validate_template,
)
from hub.db import get_or_not_found, insert_for
from hub.errors import NotFound, ValidationError
from hub.models.base import utcnow
from hub.models.campaigns import (
    Campaign,
    CampaignDelivery,
    CampaignRun,
    CampaignSchedule,
    MessageTemplate,
    Segment,
    TriggerDelivery,
    TriggerRule,
)
from hub.models.customers import Customer

CHANNELS = ("email", "sms")
TRIGGER_EVENTS = ("call.missed", "customer.created", "no_contact")
ACTIVE_RUN = ("sending", "paused")


def _text(data: Mapping[str, Any], key: str, limit: int, *, required: bool = False) -> str | None:
    if key not in data:
        if required:
            raise ValidationError(f"{key} is required", field=key)
        return None
    value = data[key]
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValidationError(f"{key} must be text", field=key)
    value = value.strip() if limit <= 500 else value
    if required and not value:
        raise ValidationError(f"{key} is required", field=key)
    if len(value) > limit:
        raise ValidationError(f"{key} longer than {limit} characters", field=key)
    return value


def _channel(data: Mapping[str, Any], required: bool = True) -> str | None:
    channel = data.get("channel")
    if channel is None and not required:
        return None
    if channel not in CHANNELS:
        raise ValidationError("channel must be email or sms", field="channel")
    return str(channel)


async def _unique(session: AsyncSession, stmt: Select[Any], what: str) -> None:
    if await session.scalar(stmt) is not None:
        raise ValidationError(f"a {what} with that name already exists", field="name")


# --- templates ------------------------------------------------------------------------------


async def create_template(
    session: AsyncSession, data: Mapping[str, Any], user_id: int | None
) -> MessageTemplate:
    """A new template, refused (TemplateInvalid: part, line, name) unless it renders."""
    name = _text(data, "name", 200, required=True)
    channel = _channel(data)
    assert name is not None and channel is not None
    parts = {p: _text(data, p, 200_000) or "" for p in ("subject", "html", "text")}
    validate_template(channel, parts)
    await _unique(
        session, select(MessageTemplate.id).where(MessageTemplate.name == name), "template"
    )
    row = MessageTemplate(name=name, channel=channel, created_by=user_id, **parts)
    session.add(row)
    await session.flush()
    return row


async def update_template(
    session: AsyncSession, template_id: int, data: Mapping[str, Any]
) -> MessageTemplate:
    """Change a template; the result is validated as a whole before anything is stored."""
    row = await get_template(session, template_id)
    name = _text(data, "name", 200)
    if name is not None and name != row.name:
        if not name:
            raise ValidationError("name is required", field="name")
        await _unique(
            session, select(MessageTemplate.id).where(MessageTemplate.name == name), "template"
        )
        row.name = name
    if "channel" in data and data["channel"] != row.channel:
        raise ValidationError("the channel of a template cannot change", field="channel")
    parts = {p: getattr(row, p) for p in ("subject", "html", "text")}
    for part in parts:
        value = _text(data, part, 200_000)
        if value is not None:
            parts[part] = value
    validate_template(row.channel, parts)
    for part, value in parts.items():
        setattr(row, part, value)
    row.updated_at = utcnow()
    await session.flush()
    return row


async def get_template(session: AsyncSession, template_id: int) -> MessageTemplate:
    """The template or NotFound."""
    return await get_or_not_found(session, MessageTemplate, template_id, "template")


async def list_templates(
    session: AsyncSession, channel: str | None = None
) -> list[MessageTemplate]:
    """All templates by name."""
    stmt = select(MessageTemplate).order_by(MessageTemplate.name)
    if channel:
        stmt = stmt.where(MessageTemplate.channel == channel)
    return list((await session.scalars(stmt)).all())


async def delete_template(session: AsyncSession, template_id: int) -> None:
    """Remove a template no campaign or rule uses."""
    row = await get_template(session, template_id)
    used = await session.scalar(
        select(func.count()).select_from(Campaign).where(Campaign.template_id == template_id)
    ) or await session.scalar(
        select(func.count()).select_from(TriggerRule).where(TriggerRule.template_id == template_id)
    )
    if used:
        raise ValidationError("the template is used by a campaign or a trigger rule")
    await session.delete(row)


def template_to_dict(t: MessageTemplate) -> dict[str, Any]:
    """JSON shape of a template."""
    return {
        "id": t.id,
        "name": t.name,
        "channel": t.channel,
        "subject": t.subject,
        "html": t.html,
        "text": t.text,
        "created_at": t.created_at.isoformat(),
        "updated_at": t.updated_at.isoformat(),
    }


def compile_template(t: MessageTemplate) -> CompiledTemplate:
    """The template ready to render."""
    return CompiledTemplate(t.channel, {p: getattr(t, p) for p in CHANNEL_PARTS[t.channel]})


# --- segments -------------------------------------------------------------------------------


def _filter(data: Mapping[str, Any]) -> dict[str, Any]:
    spec = data.get("filter", {})
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise ValidationError("filter must be an object", field="filter")
    validate_filter(spec)
    return spec


async def create_segment(
    session: AsyncSession, data: Mapping[str, Any], user_id: int | None
) -> Segment:
    """A new saved filter (validated through the whitelist)."""
    name = _text(data, "name", 200, required=True)
    assert name is not None
    spec = _filter(data)
    await _unique(session, select(Segment.id).where(Segment.name == name), "segment")
    row = Segment(
        name=name,
        description=_text(data, "description", 2000) or "",
        filter=spec,
        created_by=user_id,
    )
    session.add(row)
    await session.flush()
    return row


async def update_segment(
    session: AsyncSession, segment_id: int, data: Mapping[str, Any]
) -> Segment:
    """Change a segment's name, description or filter."""
    row = await get_segment(session, segment_id)
    name = _text(data, "name", 200)
    if name is not None and name != row.name:
        if not name:
            raise ValidationError("name is required", field="name")
        await _unique(session, select(Segment.id).where(Segment.name == name), "segment")
        row.name = name
    description = _text(data, "description", 2000)
    if description is not None:
        row.description = description
    if "filter" in data:
        row.filter = _filter(data)
    row.updated_at = utcnow()
    await session.flush()
    return row


async def get_segment(session: AsyncSession, segment_id: int) -> Segment:
    """The segment or NotFound."""
    return await get_or_not_found(session, Segment, segment_id, "segment")


async def list_segments(session: AsyncSession) -> list[Segment]:
    """All segments by name."""
    return list((await session.scalars(select(Segment).order_by(Segment.name))).all())


async def delete_segment(session: AsyncSession, segment_id: int) -> None:
    """Remove a segment no campaign uses."""
    row = await get_segment(session, segment_id)
    used = await session.scalar(
        select(func.count()).select_from(Campaign).where(Campaign.segment_id == segment_id)
    )
    if used:
        raise ValidationError("the segment is used by a campaign")
    await session.delete(row)


def segment_to_dict(s: Segment) -> dict[str, Any]:
    """JSON shape of a segment."""
    return {
        "id": s.id,
        "name": s.name,
        "description": s.description,
        "filter": s.filter,
        "created_at": s.created_at.isoformat(),
        "updated_at": s.updated_at.isoformat(),
    }


async def count_segment(
    session: AsyncSession, spec: Any, *, tz_name: str = "UTC", now: datetime | None = None
) -> int:
    """Live count of the customers a filter matches."""
    return await count_matching(session, spec, Clock(now or utcnow(), zone(tz_name)))


# --- campaigns ------------------------------------------------------------------------------


async def _template_for(session: AsyncSession, template_id: Any, channel: str) -> MessageTemplate:
    if not isinstance(template_id, int):
        raise ValidationError("template_id must be a template id", field="template_id")
    template = await session.get(MessageTemplate, template_id)
    if template is None:
        raise ValidationError(f"template {template_id} does not exist", field="template_id")
    if template.channel != channel:
        raise ValidationError(
            f"template {template_id} is for {template.channel}, not {channel}", field="template_id"
        )
    return template


async def _segment_id(session: AsyncSession, value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or await session.get(Segment, value) is None:
        raise ValidationError(f"segment {value!r} does not exist", field="segment_id")
    return value


def _messenger(data: Mapping[str, Any], channel: str) -> str:
    name = data.get("messenger") or channel
    if not isinstance(name, str) or len(name) > 32:
        raise ValidationError("messenger must be a messenger name", field="messenger")
    return name


def _from_address(data: Mapping[str, Any]) -> str | None:
    value = _text(data, "from_address", 254)
    if not value:
        return None
    if "\n" in value or "\r" in value or "@" not in value:
        raise ValidationError("from_address must be an email address", field="from_address")
    return value


async def create_campaign(
    session: AsyncSession, data: Mapping[str, Any], user_id: int | None
) -> Campaign:
    """A new campaign in draft."""
    name = _text(data, "name", 200, required=True)
    channel = _channel(data)
    assert name is not None and channel is not None
    template = await _template_for(session, data.get("template_id"), channel)
    tz_name = _text(data, "timezone", 64) or "UTC"
    zone(tz_name)
    row = Campaign(
        name=name,
        channel=channel,
        messenger=_messenger(data, channel),
        template_id=template.id,
        segment_id=await _segment_id(session, data.get("segment_id")),
        status="draft",
        status_reason="",
        from_address=_from_address(data),
        timezone=tz_name,
        created_by=user_id,
    )
    session.add(row)
    await session.flush()
    return row


async def get_campaign(session: AsyncSession, campaign_id: int) -> Campaign:
    """The campaign or NotFound."""
    return await get_or_not_found(session, Campaign, campaign_id, "campaign")


async def _sending(session: AsyncSession, campaign_id: int) -> bool:
    return (
        await session.scalar(
            select(CampaignRun.id).where(
                CampaignRun.campaign_id == campaign_id, CampaignRun.status == "sending"
            )
        )
    ) is not None


async def update_campaign(
    session: AsyncSession, campaign_id: int, data: Mapping[str, Any]
) -> Campaign:
    """Change a campaign; template, segment and messenger only while nothing is being sent."""
    row = await get_campaign(session, campaign_id)
    name = _text(data, "name", 200)
    if name is not None:
        if not name:
            raise ValidationError("name is required", field="name")
        row.name = name
    if "channel" in data and data["channel"] != row.channel:
        raise ValidationError("the channel of a campaign cannot change", field="channel")
    changing = {"template_id", "segment_id", "messenger", "from_address", "timezone"} & set(data)
    if changing and await _sending(session, campaign_id):
        raise ValidationError("pause the campaign before changing what it sends")
    if "template_id" in data:
        row.template_id = (await _template_for(session, data["template_id"], row.channel)).id
    if "segment_id" in data:
        row.segment_id = await _segment_id(session, data["segment_id"])
    if "messenger" in data:
        row.messenger = _messenger(data, row.channel)
    if "from_address" in data:
        row.from_address = _from_address(data)
    if "timezone" in data:
        tz_name = _text(data, "timezone", 64) or "UTC"
        zone(tz_name)
        row.timezone = tz_name
    row.updated_at = utcnow()
    await session.flush()
    return row


async def delete_campaign(session: AsyncSession, campaign_id: int) -> None:
    """Remove a campaign that is not sending (its runs and deliveries go with it)."""
    row = await get_campaign(session, campaign_id)
    if await _sending(session, campaign_id):
        raise ValidationError("cancel the campaign before deleting it")
    await session.delete(row)


async def list_campaigns(
    session: AsyncSession,
    *,
    status: str | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> tuple[list[Campaign], int | None]:
    """Campaigns, newest first, keyset-paged by id."""
    limit = max(1, min(limit, 200))
    stmt = select(Campaign).order_by(Campaign.id.desc()).limit(limit + 1)
    if status:
        stmt = stmt.where(Campaign.status == status)
    if before_id:
        stmt = stmt.where(Campaign.id < before_id)
    rows = list((await session.scalars(stmt)).all())
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        nxt = rows[-1].id
    return rows, nxt


async def get_schedule(session: AsyncSession, campaign_id: int) -> CampaignSchedule | None:
    """The campaign's schedule, if any."""
    return await session.scalar(
        select(CampaignSchedule).where(CampaignSchedule.campaign_id == campaign_id)
    )


def schedule_to_dict(s: CampaignSchedule | None) -> dict[str, Any] | None:
    """JSON shape of a schedule."""
    if s is None:
        return None
    return {
        "kind": s.kind,
        "run_at": s.run_at.isoformat() if s.run_at else None,
        "cron": s.cron,
        "timezone": s.timezone,
        "next_fire_at": s.next_fire_at.isoformat() if s.next_fire_at else None,
        "last_fired_at": s.last_fired_at.isoformat() if s.last_fired_at else None,
        "active": s.active,
    }


def campaign_to_dict(c: Campaign, schedule: CampaignSchedule | None = None) -> dict[str, Any]:
    """JSON shape of a campaign."""
    return {
        "id": c.id,
        "name": c.name,
        "channel": c.channel,
        "messenger": c.messenger,
        "template_id": c.template_id,
        "segment_id": c.segment_id,
        "status": c.status,
        "status_reason": c.status_reason,
        "from_address": c.from_address,
        "timezone": c.timezone,
        "schedule": schedule_to_dict(schedule),
        "created_at": c.created_at.isoformat(),
        "updated_at": c.updated_at.isoformat(),
    }


async def start_run(
    session: AsyncSession,
    campaign: Campaign,
    scheduled_for: datetime,
    *,
    origin: str,
    missed_since: datetime | None = None,
) -> int | None:
    """Create the run for one slot, once: a second call for the same slot returns None."""
    now = utcnow()
    stmt = (
        insert_for(session)(CampaignRun)
        .values(
            campaign_id=campaign.id,
            scheduled_for=scheduled_for,
            missed_since=missed_since,
            origin=origin,
            status="sending",
            status_reason="",
            materialise_cursor=0,
            bounced_count=0,
            unsubscribed_count=0,
            created_at=now,
            started_at=now,
        )
        .on_conflict_do_nothing(index_elements=["campaign_id", "scheduled_for"])
        .returning(CampaignRun.id)
    )
    run_id: int | None = await session.scalar(stmt)
    if run_id is not None:
        await session.execute(
            update(Campaign)
            .where(Campaign.id == campaign.id)
            .values(status="running", status_reason="", updated_at=now)
        )
    return run_id


async def schedule_campaign(
    session: AsyncSession, campaign_id: int, data: Mapping[str, Any], *, now: datetime | None = None
) -> dict[str, Any]:
    """Send now ({"now": true}), once at an aware date-time ({"at": "...+01:00"}), on a cron rule
    ({"cron": "0 9 * * *", "timezone": "Europe/Berlin"}), or stop scheduling ({"clear": true})."""
    now = now or utcnow()
    campaign = await get_campaign(session, campaign_id)
    if campaign.status == "cancelled":
        raise ValidationError("the campaign was cancelled; create a new one")
    existing = await get_schedule(session, campaign_id)
    if data.get("clear"):
        if existing is not None:
            await session.delete(existing)
        if campaign.status == "scheduled":
            campaign.status = "draft"
        return {"schedule": None}
    if data.get("now"):
        run_id = await start_run(session, campaign, now, origin="now")
        return {"run_id": run_id}
    if "at" in data:
        at_text = data["at"]
        if not isinstance(at_text, str):
            raise ValidationError("at must be an ISO date-time with an offset", field="at")
        try:
            at = datetime.fromisoformat(at_text)
        except ValueError as err:
            raise ValidationError(f"not a date-time: {at_text!r}", field="at") from err
        if at.tzinfo is None:
            tz_name = data.get("timezone") or campaign.timezone
            if not isinstance(tz_name, str):
                raise ValidationError("timezone must be an IANA zone name", field="timezone")
            at = at.replace(tzinfo=zone(tz_name))
        at = at.astimezone(UTC)
        values: dict[str, Any] = {
            "kind": "once",
            "run_at": at,
            "cron": None,
            "timezone": campaign.timezone,
            "next_fire_at": at,
        }
    elif "cron" in data:
        cron_text = data["cron"]
        if not isinstance(cron_text, str):
            raise ValidationError("cron must be text", field="cron")
        tz_name = data.get("timezone") or campaign.timezone
        if not isinstance(tz_name, str):
            raise ValidationError("timezone must be an IANA zone name", field="timezone")
        cron = Cron.parse(cron_text)
        values = {
            "kind": "cron",
            "run_at": None,
            "cron": cron.text,
            "timezone": tz_name,
            "next_fire_at": next_fire(cron, zone(tz_name), now),
        }
    else:
        raise ValidationError('send {"now": true}, {"at": ...}, {"cron": ...} or {"clear": true}')
    if existing is None:
        existing = CampaignSchedule(campaign_id=campaign_id, active=True, **values)
        session.add(existing)
    else:
        for key, value in values.items():
            setattr(existing, key, value)
        existing.active = True
        existing.updated_at = now
    if campaign.status in ("draft", "finished"):
        campaign.status = "scheduled"
        campaign.status_reason = ""
    await session.flush()
    return {"schedule": schedule_to_dict(existing)}


async def set_campaign_state(
    session: AsyncSession, campaign_id: int, action: str, reason: str = ""
) -> Campaign:
    """pause | resume | cancel a campaign and its unfinished runs."""
    campaign = await get_campaign(session, campaign_id)
    now = utcnow()
    runs = CampaignRun.campaign_id == campaign_id
    if action == "pause":
        if campaign.status in ("cancelled", "finished", "draft"):
            raise ValidationError(f"a {campaign.status} campaign cannot be paused")
        await session.execute(
            update(CampaignRun)
            .where(runs, CampaignRun.status == "sending")
            .values(status="paused", status_reason=reason or "paused")
        )
        campaign.status = "paused"
        campaign.status_reason = reason or "paused by a user"
    elif action == "resume":
        if campaign.status != "paused":
            raise ValidationError(
                f"only a paused campaign can be resumed (this one is {campaign.status})"
            )
        resumed = await session.execute(
            update(CampaignRun)
            .where(runs, CampaignRun.status == "paused")
            .values(status="sending", status_reason="")
            .returning(CampaignRun.id)
        )
        has_runs = bool(resumed.scalars().all())
        schedule = await get_schedule(session, campaign_id)
        campaign.status = (
            "running" if has_runs else "scheduled" if schedule and schedule.active else "finished"
        )
        campaign.status_reason = ""
    elif action == "cancel":
        if campaign.status == "cancelled":
            return campaign
        run_ids = select(CampaignRun.id).where(runs, CampaignRun.status.in_(ACTIVE_RUN))
        # Claimed rows finish their send (the worker records them); unclaimed ones never go.
        await session.execute(
            update(CampaignDelivery)
            .where(CampaignDelivery.run_id.in_(run_ids), CampaignDelivery.state == "pending")
            .values(state="skipped", error="campaign cancelled")
        )
        await session.execute(
            update(CampaignRun)
            .where(runs, CampaignRun.status.in_(ACTIVE_RUN))
            .values(status="cancelled", status_reason=reason or "cancelled", finished_at=now)
        )
        await session.execute(
            update(CampaignSchedule)
            .where(CampaignSchedule.campaign_id == campaign_id)
            .values(active=False, next_fire_at=None)
        )
        campaign.status = "cancelled"
        campaign.status_reason = reason or "cancelled by a user"
    else:
        raise ValidationError("action must be pause, resume or cancel")
    campaign.updated_at = now
    await session.flush()
    return campaign


async def run_progress(session: AsyncSession, run: CampaignRun) -> dict[str, Any]:
    """Counts of one run by state (the live progress)."""
    counts = dict.fromkeys(("pending", "sending", "sent", "failed", "suppressed", "skipped"), 0)
    for state, count in await session.execute(
        select(CampaignDelivery.state, func.count())
        .where(CampaignDelivery.run_id == run.id)
        .group_by(CampaignDelivery.state)
    ):
        counts[state] = int(count)
    return {
        "type": "campaign.progress",
        "campaign_id": run.campaign_id,
        "run_id": run.id,
        "status": run.status,
        "status_reason": run.status_reason,
        "scheduled_for": run.scheduled_for.isoformat(),
        "materialised": run.materialised_at is not None,
        "total": sum(counts.values()),
        "queued": counts["pending"] + counts["sending"],
        **counts,
        "bounced": run.bounced_count,
        "unsubscribed": run.unsubscribed_count,
    }


async def campaign_progress(session: AsyncSession, campaign_id: int) -> dict[str, Any]:
    """The campaign's state and the progress of its latest runs."""
    campaign = await get_campaign(session, campaign_id)
    runs = (
        await session.scalars(
            select(CampaignRun)
            .where(CampaignRun.campaign_id == campaign_id)
            .order_by(CampaignRun.id.desc())
            .limit(10)
        )
    ).all()
    return {
        "campaign_id": campaign_id,
        "status": campaign.status,
        "status_reason": campaign.status_reason,
        "runs": [await run_progress(session, run) for run in runs],
    }


# --- previews -------------------------------------------------------------------------------


async def preview(
    session: AsyncSession,
    template: MessageTemplate,
    *,
    customer_id: int | None,
    campaign: Campaign | None,
    base_url: str,
    now: datetime | None = None,
) -> Rendered:
    """Render a template for one customer (or the sample customer) without sending anything."""
    compiled = compile_template(template)
    now = now or utcnow()
    if customer_id is None:
        return compiled.render(sample_context())
    customers = await load_customers(session, [customer_id])
    if customer_id not in customers:
        raise NotFound(f"customer {customer_id} not found")
    tz = zone(campaign.timezone if campaign else "UTC")
    context = message_context(
        customers[customer_id],
        campaign={"id": campaign.id, "name": campaign.name} if campaign else None,
        event=None,
        unsubscribe_url=f"{base_url.rstrip('/')}/u/preview",
        tz=tz,
        now=now,
    )
    return compiled.render(context)


def rendered_to_dict(r: Rendered, channel: str) -> dict[str, Any]:
    """JSON shape of a preview."""
    if channel == "sms":
        return {"text": r.text, "length": len(r.text), "segments": sms_segments(r.text)}
    return {"subject": r.subject, "html": r.html, "text": r.text}


def sms_segments(text: str) -> int:
    """How many SMS parts a text needs (GSM-7 160/153, UCS-2 70/67)."""
    gsm = all(ord(ch) < 128 for ch in text)
    single, multi = (160, 153) if gsm else (70, 67)
    if len(text) <= single:
        return 1
    return -(-len(text) // multi)


# --- trigger rules --------------------------------------------------------------------------


async def create_rule(
    session: AsyncSession, data: Mapping[str, Any], user_id: int | None
) -> TriggerRule:
    """A new trigger rule (validated: event, template of the channel, condition, days)."""
    name = _text(data, "name", 200, required=True)
    channel = _channel(data)
    assert name is not None and channel is not None
    event = data.get("event")
    if event not in TRIGGER_EVENTS:
        raise ValidationError(f"event must be one of {', '.join(TRIGGER_EVENTS)}", field="event")
    template = await _template_for(session, data.get("template_id"), channel)
    await _unique(session, select(TriggerRule.id).where(TriggerRule.name == name), "rule")
    rule = TriggerRule(
        name=name,
        event=event,
        channel=channel,
        messenger=_messenger(data, channel),
        template_id=template.id,
        created_by=user_id,
        active=True,
        status_reason="",
        # Only customers created from now on get a customer.created message.
        scan_cursor=int(await session.scalar(select(func.max(Customer.id))) or 0),
    )
    _apply_rule(rule, data)
    session.add(rule)
    await session.flush()
    return rule


def _apply_rule(rule: TriggerRule, data: Mapping[str, Any]) -> None:
    delay = data.get("delay_seconds", rule.delay_seconds or 0)
    if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= 30 * 86400:
        raise ValidationError("delay_seconds must be 0 to 2592000", field="delay_seconds")
    rule.delay_seconds = delay
    days = data.get("days", rule.days)
    if rule.event == "no_contact":
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650:
            raise ValidationError("no_contact needs days (1 to 3650)", field="days")
    elif days is not None:
        raise ValidationError("days only applies to no_contact", field="days")
    rule.days = days
    if "condition" in data:
        condition = data["condition"]
        if condition is not None:
            if not isinstance(condition, dict):
                raise ValidationError("condition must be a filter object", field="condition")
            validate_filter(condition)
        rule.condition = condition or None
    dedupe = data.get("dedupe", rule.dedupe or "event")
    if dedupe not in ("event", "day"):
        raise ValidationError("dedupe must be event or day", field="dedupe")
    if dedupe == "day" and rule.event != "call.missed":
        raise ValidationError("dedupe=day applies to call.missed only", field="dedupe")
    rule.dedupe = dedupe
    tz_name = data.get("timezone", rule.timezone or "UTC")
    if not isinstance(tz_name, str):
        raise ValidationError("timezone must be an IANA zone name", field="timezone")
    zone(tz_name)
    rule.timezone = tz_name
    if "active" in data:
        if not isinstance(data["active"], bool):
            raise ValidationError("active must be true or false", field="active")
        rule.active = data["active"]
        if rule.active:
            rule.status_reason = ""


async def update_rule(session: AsyncSession, rule_id: int, data: Mapping[str, Any]) -> TriggerRule:
    """Change a rule."""
    rule = await get_rule(session, rule_id)
    name = _text(data, "name", 200)
    if name is not None and name != rule.name:
        if not name:
            raise ValidationError("name is required", field="name")
        await _unique(session, select(TriggerRule.id).where(TriggerRule.name == name), "rule")
        rule.name = name
    for fixed in ("event", "channel"):
        if fixed in data and data[fixed] != getattr(rule, fixed):
            raise ValidationError(f"the {fixed} of a rule cannot change", field=fixed)
    if "template_id" in data:
        rule.template_id = (await _template_for(session, data["template_id"], rule.channel)).id
    if "messenger" in data:
        rule.messenger = _messenger(data, rule.channel)
    _apply_rule(rule, data)
    rule.updated_at = utcnow()
    await session.flush()
    return rule


async def get_rule(session: AsyncSession, rule_id: int) -> TriggerRule:
    """The rule or NotFound."""
    return await get_or_not_found(session, TriggerRule, rule_id, "trigger rule")


async def list_rules(session: AsyncSession) -> list[TriggerRule]:
    """All rules by name."""
    return list((await session.scalars(select(TriggerRule).order_by(TriggerRule.name))).all())


async def delete_rule(session: AsyncSession, rule_id: int) -> None:
    """Remove a rule and its delivery records."""
    rule = await get_rule(session, rule_id)
    await session.execute(delete(TriggerDelivery).where(TriggerDelivery.rule_id == rule_id))
    await session.delete(rule)


def rule_to_dict(r: TriggerRule) -> dict[str, Any]:
    """JSON shape of a rule."""
    return {
        "id": r.id,
        "name": r.name,
        "event": r.event,
        "channel": r.channel,
        "messenger": r.messenger,
        "template_id": r.template_id,
        "delay_seconds": r.delay_seconds,
        "days": r.days,
        "condition": r.condition,
        "dedupe": r.dedupe,
        "timezone": r.timezone,
        "active": r.active,
        "status_reason": r.status_reason,
        "created_at": r.created_at.isoformat(),
    }


async def has_unfinished(session: AsyncSession, run_id: int) -> bool:
    """True while a run still has messages to send."""
    found = await session.scalar(
        select(CampaignDelivery.id)
        .where(
            CampaignDelivery.run_id == run_id,
            CampaignDelivery.state.in_(("pending", "sending")),
        )
        .limit(1)
    )
    return found is not None
