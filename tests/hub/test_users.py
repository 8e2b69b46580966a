"""Users: Argon2id passwords, roles, devices, API tokens, browser sessions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from hub.errors import NotFound, ValidationError
from hub.models.base import utcnow
from hub.models.users import ApiToken, User
from hub.users import (
    authenticate,
    close_session,
    create_token,
    create_user,
    devices_by_user,
    hash_password,
    open_session,
    resolve_session,
    user_for_token,
    verify_password,
)

PASSWORD = "correct horse battery"


def test_passwords_are_argon2id_hashes():
    stored = hash_password(PASSWORD)
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    assert hash_password(PASSWORD) != stored  # salted
    assert verify_password(stored, PASSWORD)
    assert not verify_password(stored, PASSWORD + "!")
    assert not verify_password("not a hash", PASSWORD)
    with pytest.raises(ValidationError, match="at least 8"):
        hash_password("short")


async def test_create_and_authenticate(sessions):
    async with sessions() as session, session.begin():
        user = await create_user(
            session, "ann", PASSWORD, "agent", extension="201", devices=["PJSIP/201", "SIP/ann"]
        )
        assert user.display_name == "ann"
    async with sessions() as session, session.begin():
        assert (await authenticate(session, "ann", PASSWORD)).username == "ann"
        assert await authenticate(session, "ann", "wrong password") is None
        assert await authenticate(session, "nobody", PASSWORD) is None
        devices = await devices_by_user(session)
        assert {d: u.username for d, u in devices.items()} == {"PJSIP/201": "ann", "SIP/ann": "ann"}
        (await session.scalar(select(User).where(User.username == "ann"))).active = False
    async with sessions() as session:
        assert await authenticate(session, "ann", PASSWORD) is None  # deactivated


REFUSALS = [
    ({"username": "ann"}, "exists already"),
    ({"username": "bob", "extension": "201"}, "extension 201 belongs to another user"),
    ({"username": "bob", "devices": ["PJSIP/201"]}, "device PJSIP/201 belongs to another user"),
    ({"username": "bob", "devices": ["201"]}, "TECH/RESOURCE"),
    ({"username": "bob", "role": "boss"}, "role must be one of"),
    ({"username": "bad name!"}, "letters, digits"),
    ({"username": ""}, "letters, digits"),
    ({"username": "bob", "password": "short"}, "at least 8"),
]


async def test_create_user_refuses(sessions):
    async with sessions() as session, session.begin():
        await create_user(session, "ann", PASSWORD, "agent", extension="201", devices=["PJSIP/201"])
    for kwargs, message in REFUSALS:
        args = {"username": "bob", "password": PASSWORD, "role": "agent", **kwargs}
        with pytest.raises(ValidationError, match=message):
            async with sessions() as session, session.begin():
                await create_user(
                    session, args.pop("username"), args.pop("password"), args.pop("role"), **args
                )
    async with sessions() as session:
        assert len((await session.scalars(select(User))).all()) == 1


async def test_tokens_are_stored_hashed_and_resolve(sessions):
    async with sessions() as session, session.begin():
        await create_user(session, "ann", PASSWORD, "marketer")
        token = await create_token(session, "ann", "script")
        with pytest.raises(NotFound):
            await create_token(session, "nobody")
    assert token.startswith("chub_") and len(token) > 40
    async with sessions() as session:
        stored = (await session.scalars(select(ApiToken))).all()
    assert len(stored) == 1 and stored[0].token_hash != token and token not in stored[0].token_hash
    assert stored[0].last_used_at is None
    async with sessions() as session, session.begin():
        user = await user_for_token(session, token)
        assert user is not None and user.username == "ann" and user.role == "marketer"
        assert await user_for_token(session, token + "x") is None
        assert await user_for_token(session, "") is None
    async with sessions() as session:
        assert (await session.scalar(select(ApiToken))).last_used_at is not None
    async with sessions() as session, session.begin():
        (await session.scalar(select(User))).active = False
    async with sessions() as session:
        assert await user_for_token(session, token) is None


async def test_browser_sessions_expire_and_close(sessions):
    async with sessions() as session, session.begin():
        user = await create_user(session, "ann", PASSWORD, "supervisor")
        sid, csrf = await open_session(session, user, hours=1)
    async with sessions() as session:
        found = await resolve_session(session, sid)
        assert found is not None and found[0].username == "ann" and found[1] == csrf
        assert await resolve_session(session, sid, now=utcnow() + timedelta(hours=2)) is None
        assert await resolve_session(session, "forged") is None
    async with sessions() as session, session.begin():
        await close_session(session, sid)
    async with sessions() as session:
        assert await resolve_session(session, sid) is None
