"""Fixtures for mail tests that need the real Dovecot: an outside-world session, a scratch mailbox."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from tests.connectors.imap.conftest import Admin, admin  # noqa: F401 (the fixture)


@pytest.fixture
async def scratch(admin: Admin) -> AsyncIterator[str]:  # noqa: F811
    """A mailbox of this test's own (the accounts are shared with other tests)."""
    name = f"commhub-e2e-{uuid.uuid4().hex[:10]}"
    await admin.create(name)
    yield name
    await admin.delete(name)
