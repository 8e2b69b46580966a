"""Users and roles, password hashing (Argon2id), API tokens and browser sessions."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.errors import NotFound, ValidationError
from hub.models.base import utcnow
from hub.models.users import ROLES, ApiToken, AuditEntry, User, UserDevice, WebSession

_hasher = PasswordHasher()  # Argon2id with the library's current recommended parameters
# Verifying against this keeps the time of "no such user" equal to "wrong password".
_DUMMY_HASH = _hasher.hash("not-a-real-password")
MIN_PASSWORD = 8


def hash_password(password: str) -> str:
    """Argon2id hash of a password."""
    if len(password) < MIN_PASSWORD:
        raise ValidationError(f"password must have at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """True when the password matches; never raises on a malformed hash."""
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_user(
    session: AsyncSession,
    username: str,
    password: str,
    role: str,
    *,
    extension: str | None = None,
    devices: Iterable[str] = (),
    display_name: str = "",
    email: str | None = None,
    password_hash: str | None = None,
) -> User:
    """Add a user; agents may carry an extension and the devices of their phones.

    `password_hash` (an Argon2 hash made earlier, e.g. by a restore) replaces `password`."""
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}, got {role!r}", field="role")
    if (
        not username
        or len(username) > 64
        or not username.replace(".", "").replace("-", "").replace("_", "").isalnum()
    ):
        raise ValidationError("user name: letters, digits, . - _ only", field="username")
    if await session.scalar(select(User.id).where(User.username == username)):
        raise ValidationError(f"user {username!r} exists already", field="username")
    if extension and await session.scalar(select(User.id).where(User.extension == extension)):
        raise ValidationError(f"extension {extension} belongs to another user", field="extension")
    user = User(
        username=username,
        password_hash=password_hash or hash_password(password),
        role=role,
        extension=extension or None,
        display_name=display_name or username,
        email=email,
    )
    for device in devices:
        device = device.strip()
        if not device or "/" not in device:
            raise ValidationError(f"device must look like TECH/RESOURCE, got {device!r}")
        if await session.get(UserDevice, device):
            raise ValidationError(f"device {device} belongs to another user", field="devices")
        user.devices.append(UserDevice(device=device))
    session.add(user)
    await session.flush()
    return user


async def authenticate(session: AsyncSession, username: str, password: str) -> User | None:
    """The active user with these credentials, or None (same cost either way)."""
    user = await session.scalar(select(User).where(User.username == username))
    if user is None or not user.active:
        verify_password(_DUMMY_HASH, password)
        return None
    return user if verify_password(user.password_hash, password) else None


async def create_token(session: AsyncSession, username: str, name: str = "") -> str:
    """A new API token for the user; only its hash is stored, the token is returned once."""
    user = await session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user {username!r}")
    token = "chub_" + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=_digest(token), name=name))
    await session.flush()
    return token


async def user_for_token(session: AsyncSession, token: str) -> User | None:
    """The active user behind a bearer token, or None."""
    row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == _digest(token)))
    if row is None:
        return None
    user = await session.get(User, row.user_id)
    if user is None or not user.active:
        return None
    row.last_used_at = utcnow()
    return user


async def open_session(session: AsyncSession, user: User, hours: int) -> tuple[str, str]:
    """Start a browser session; returns (session id for the cookie, CSRF token)."""
    sid = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    session.add(
        WebSession(
            id_hash=_digest(sid),
            user_id=user.id,
            csrf_token=csrf,
            expires_at=utcnow() + timedelta(hours=hours),
        )
    )
    await session.flush()
    return sid, csrf


async def resolve_session(
    session: AsyncSession, sid: str, now: datetime | None = None
) -> tuple[User, str] | None:
    """(user, csrf token) of a live session id, or None."""
    row = await session.get(WebSession, _digest(sid))
    if row is None or row.expires_at <= (now or utcnow()):
        return None
    user = await session.get(User, row.user_id)
    if user is None or not user.active:
        return None
    return user, row.csrf_token


async def close_session(session: AsyncSession, sid: str) -> None:
    """Log out."""
    await session.execute(delete(WebSession).where(WebSession.id_hash == _digest(sid)))


async def audit(
    session: AsyncSession, user_id: int | None, action: str, target: str = "", **details: object
) -> None:
    """Record who changed what."""
    session.add(AuditEntry(user_id=user_id, action=action, target=target, details=dict(details)))


async def devices_by_user(session: AsyncSession) -> dict[str, User]:
    """Every known device and the user it belongs to (the call tracker's agent map)."""
    rows = await session.execute(select(UserDevice.device, User).join(User))
    return {device: user for device, user in rows}
