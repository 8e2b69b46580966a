"""Default message templates shipped in templates/messages/, installed once by name."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from hub.campaigns.templates import validate_template
from hub.db import insert_for
from hub.models.base import utcnow
from hub.models.campaigns import MessageTemplate

FOLDER = Path(__file__).resolve().parents[2] / "templates" / "messages"
# name -> (channel, file stem)
DEFAULTS = {
    "Birthday (email)": ("email", "birthday_email"),
    "Birthday (SMS)": ("sms", "birthday_sms"),
    "Welcome (email)": ("email", "welcome_email"),
    "Missed call (SMS)": ("sms", "missed_call_sms"),
}


def _read(stem: str, suffix: str) -> str:
    path = FOLDER / f"{stem}{suffix}"
    return path.read_text(encoding="utf-8") if path.exists() else ""


def default_parts(name: str) -> tuple[str, dict[str, str]]:
    """(channel, parts) of one shipped template, validated like a user's."""
    channel, stem = DEFAULTS[name]
    if channel == "email":
        parts = {
            "subject": _read(stem, ".subject.txt").strip(),
            "html": _read(stem, ".html"),
            "text": _read(stem, ".txt"),
        }
    else:
        parts = {"subject": "", "html": "", "text": _read(stem, ".txt").strip()}
    validate_template(channel, parts)
    return channel, parts


async def install_defaults(session: AsyncSession) -> int:
    """Add the shipped templates that are missing (by name); returns how many were added."""
    added = 0
    now = utcnow()
    for name in DEFAULTS:
        channel, parts = default_parts(name)
        stmt = (
            insert_for(session)(MessageTemplate)
            .values(name=name, channel=channel, created_at=now, updated_at=now, **parts)
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(MessageTemplate.id)
        )
        if await session.scalar(stmt) is not None:
            added += 1
    return added
