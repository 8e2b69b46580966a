"""Outgoing one-off email: compose from API input or a template, thread it, send it, log it.

The SMTP send happens outside any database transaction (a slow relay must not hold locks). What
is stored afterwards depends on the outcome:
- accepted: an email_messages row (status "sent") and a timeline row for the customer;
- refused for good (EmailRejected): a row with status "failed" and the reply, and, when the
  server refused the address itself, the address is suppressed ("bounced") in the same
  transaction; the error is then raised again for the caller (the API answers 502);
- retryable failure (network, 4xx after the sender's retries): nothing is stored, the error is
  raised (the API answers 503), so the agent can simply send again.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.customers import find_by_email, get_customer
from hub.errors import NotFound, ValidationError
from hub.mail.inbound import find_message, message_url, timeline_data
from hub.mail.parse import make_snippet
from hub.messaging.ports import EmailRejected, EmailSender, OutgoingEmail
from hub.models.base import utcnow
from hub.models.consent import Suppression
from hub.models.mail import EmailMessage
from hub.phone import normalize_email
from hub.timeline import record_interaction

_LOG = logging.getLogger(__name__)

MAX_SUBJECT = 500
MAX_BODY = 1_000_000
MAX_REFERENCES = 20


@dataclass(frozen=True)
class EmailDraft:
    """A validated request to send one email (POST /api/v1/messages/email)."""

    customer_id: int | None = None
    to: str | None = None
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    template: str | int | None = None
    in_reply_to: str | int | None = None  # an email_messages id or a Message-ID


def _opt_text(data: dict[str, Any], key: str, limit: int) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{key} must be text", field=key)
    if len(value) > limit:
        raise ValidationError(f"{key} longer than {limit} characters", field=key)
    return value


def draft_from_json(data: dict[str, Any]) -> EmailDraft:
    """Check the API body's types and sizes; the rest is checked by send_email."""
    customer_id = data.get("customer_id")
    if customer_id is not None and (
        not isinstance(customer_id, int) or isinstance(customer_id, bool)
    ):
        raise ValidationError("customer_id must be a customer id", field="customer_id")
    template = data.get("template")
    if template is not None and not isinstance(template, (str, int)):
        raise ValidationError("template must be a template name or id", field="template")
    in_reply_to = data.get("in_reply_to")
    if in_reply_to is not None and not isinstance(in_reply_to, (str, int)):
        raise ValidationError("in_reply_to must be a message id", field="in_reply_to")
    draft = EmailDraft(
        customer_id=customer_id,
        to=_opt_text(data, "to", 320),
        subject=_opt_text(data, "subject", MAX_SUBJECT),
        text=_opt_text(data, "text", MAX_BODY),
        html=_opt_text(data, "html", MAX_BODY),
        template=template,
        in_reply_to=in_reply_to,
    )
    if draft.customer_id is None and not draft.to and draft.in_reply_to is None:
        raise ValidationError("give customer_id, to, or in_reply_to", field="to")
    return draft


def new_message_id(from_address: str) -> str:
    """A Message-ID in the sender's domain, known before sending (to log and thread it)."""
    domain = from_address.rpartition("@")[2].strip(" >") or "localhost"
    return f"<{uuid.uuid4().hex}@{domain}>"


def reply_subject(subject: str) -> str:
    """'Re: ' once, however many replies deep."""
    stripped = subject.strip()
    return stripped if stripped.lower().startswith("re:") else f"Re: {stripped}"


async def _parent(session: AsyncSession, ref: str | int) -> EmailMessage:
    row: EmailMessage | None
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        row = await session.get(EmailMessage, int(ref))
    else:
        row = await find_message(session, ref.strip())
    if row is None:
        raise NotFound(f"message {ref} to reply to not found")
    return row


async def _render_template(
    session: AsyncSession, ref: str | int, customer_id: int | None, tz: str
) -> tuple[str, str, str]:
    """(subject, text, html) of a stored email template rendered for the customer."""
    from hub.campaigns.context import load_customers, message_context
    from hub.campaigns.templates import CompiledTemplate
    from hub.models.campaigns import MessageTemplate

    if isinstance(ref, int) or ref.isdigit():
        template = await session.get(MessageTemplate, int(ref))
    else:
        template = await session.scalar(select(MessageTemplate).where(MessageTemplate.name == ref))
    if template is None or template.channel != "email":
        raise ValidationError(f"no email template {ref!r}", field="template")
    customer = None
    if customer_id is not None:
        customer = (await load_customers(session, [customer_id])).get(customer_id)
    context = message_context(
        customer,
        campaign=None,
        event=None,
        unsubscribe_url="",
        tz=ZoneInfo(tz),
        now=utcnow(),
    )
    parts = {"subject": template.subject, "html": template.html, "text": template.text}
    rendered = CompiledTemplate("email", parts).render(context)
    return rendered.subject, rendered.text, rendered.html


@dataclass
class _Plan:
    message: OutgoingEmail
    customer_id: int | None
    thread_key: str
    refs: list[str]


async def _plan(session: AsyncSession, draft: EmailDraft, from_address: str, tz: str) -> _Plan:
    parent = await _parent(session, draft.in_reply_to) if draft.in_reply_to is not None else None
    customer_id = draft.customer_id
    if customer_id is not None:
        customer = await get_customer(session, customer_id)
    elif parent is not None:
        customer_id = parent.customer_id
    if draft.to:
        to = normalize_email(draft.to)
    elif customer_id is not None:
        customer = await get_customer(session, customer_id)
        emails = [c.value for c in customer.contacts if c.kind == "email"]
        if not emails:
            raise ValidationError(f"customer {customer_id} has no email address", field="to")
        to = emails[0]
    elif parent is not None and parent.direction == "inbound" and parent.from_address:
        to = normalize_email(parent.from_address)
    else:
        raise ValidationError("no recipient: give to or customer_id", field="to")
    if customer_id is None:
        found = await find_by_email(session, to)
        customer_id = found.id if found else None
    bounced = await session.scalar(
        select(Suppression.created_at).where(
            Suppression.channel == "email", Suppression.value == to, Suppression.reason == "bounced"
        )
    )
    if bounced is not None:
        raise ValidationError(
            f"{to} bounced on {bounced:%Y-%m-%d}; remove it from the suppression list to retry",
            field="to",
        )
    subject, text, html = draft.subject, draft.text, draft.html
    if draft.template is not None:
        t_subject, t_text, t_html = await _render_template(session, draft.template, customer_id, tz)
        subject = subject if subject is not None else t_subject
        text = text if text is not None else (t_text or None)
        html = html if html is not None else (t_html or None)
    if not subject and parent is not None:
        subject = reply_subject(parent.subject)
    if not subject or not subject.strip():
        raise ValidationError("subject is required", field="subject")
    if not (text or html):
        raise ValidationError("give text or html (or a template that has them)", field="text")
    in_reply_to = None
    refs: list[str] = []
    thread_key = ""
    if parent is not None:
        thread_key = parent.thread_key
        if not parent.message_id.endswith("@commhub.invalid>"):
            in_reply_to = parent.message_id
            refs = [*parent.refs, parent.message_id][-MAX_REFERENCES:]
    message_id = new_message_id(from_address)
    message = OutgoingEmail(
        from_address=from_address,
        to=to,
        subject=" ".join(subject.split()),
        text=text,
        html=html,
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=tuple(refs),
    )
    return _Plan(message, customer_id, thread_key or message_id, refs)


async def send_email(
    sessions: async_sessionmaker[AsyncSession],
    sender: EmailSender,
    draft: EmailDraft,
    *,
    from_address: str,
    user_id: int | None = None,
    tz: str = "UTC",
) -> EmailMessage:
    """Send one email and log it (see the module docstring for what happens on failure)."""
    async with sessions() as session:
        plan = await _plan(session, draft, from_address, tz)
    msg = plan.message
    try:
        await sender.send(msg)
    except EmailRejected as err:
        async with sessions() as session, session.begin():
            row = await _store(session, plan, from_address, user_id, "failed", str(err))
            if err.recipient:
                from hub.consent import suppress

                await suppress(session, "email", err.recipient.lower(), "bounced", detail=str(err))
        _LOG.warning("email to %s refused: %s (logged as message %d)", msg.to, err, row.id)
        raise
    async with sessions() as session, session.begin():
        row = await _store(session, plan, from_address, user_id, "sent", "")
    _LOG.info("email %s sent to %s (message %d)", msg.message_id, msg.to, row.id)
    return row


async def _store(
    session: AsyncSession,
    plan: _Plan,
    from_address: str,
    user_id: int | None,
    status: str,
    detail: str,
) -> EmailMessage:
    msg = plan.message
    assert msg.message_id is not None
    now = utcnow()
    row = EmailMessage(
        message_id=msg.message_id,
        direction="outbound",
        status=status,
        customer_id=plan.customer_id,
        user_id=user_id,
        thread_key=plan.thread_key,
        in_reply_to=msg.in_reply_to,
        refs=plan.refs,
        subject=msg.subject[:500],
        from_address=from_address.rpartition("<")[2].strip(" >").lower()[:254],
        from_name="",
        to_addresses=[msg.to],
        cc_addresses=[],
        body_text=msg.text or "",
        body_html=msg.html or "",
        snippet=make_snippet(msg.text or "", msg.html or "")[:300],
        attachments=[],
        problems=[],
        detail=detail[:500],
        occurred_at=now,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    interaction, _ = await record_interaction(
        session,
        channel="email",
        external_id=msg.message_id,
        customer_id=plan.customer_id,
        direction="outbound",
        status=status,
        occurred_at=now,
        user_id=user_id,
        summary=msg.subject or "(no subject)",
        data=timeline_data(row),
    )
    row.interaction_id = interaction.id
    return row


def message_to_dict(row: EmailMessage, *, full: bool = False) -> dict[str, Any]:
    """JSON shape of a message; `full` adds bodies, attachments and problems.

    body_html is the sender's HTML, unfiltered: show it only in a sandboxed frame."""
    out: dict[str, Any] = {
        "id": row.id,
        "message_id": row.message_id,
        "direction": row.direction,
        "status": row.status,
        "customer_id": row.customer_id,
        "interaction_id": row.interaction_id,
        "user_id": row.user_id,
        "thread_key": row.thread_key,
        "subject": row.subject,
        "from": row.from_address,
        "from_name": row.from_name,
        "to": row.to_addresses,
        "snippet": row.snippet,
        "occurred_at": row.occurred_at.isoformat(),
        "detail": row.detail,
        "url": message_url(row.id),
        "attachments": [
            {k: a.get(k) for k in ("name", "content_type", "size", "sha256", "inline")}
            for a in row.attachments
        ],
    }
    if full:
        out.update(
            cc=row.cc_addresses,
            in_reply_to=row.in_reply_to,
            references=row.refs,
            text=row.body_text,
            html=row.body_html,
            problems=row.problems,
            mailbox=row.mailbox,
        )
    return out
