"""Telephony wiring as `commhub serve` does it: a wrong AMI secret stops the start with a clear
message (no reconnect storm); an unreachable Asterisk does not stop the rest of commhub."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.config import load_config
from hub.errors import AuthError
from hub.runtime import running_hub
from tests.conftest import free_port, migrated_sqlite


def _config(tmp_path: Path, port: int, secret: str):
    return load_config(
        environ={
            "COMMHUB_DATABASE_URL": migrated_sqlite(tmp_path / "c.db"),
            "COMMHUB_AMI_ENABLED": "true",
            "COMMHUB_AMI_PORT": str(port),
            "COMMHUB_AMI_USERNAME": "hub",
            "COMMHUB_AMI_SECRET": secret,
        }
    )


async def test_wrong_secret_fails_the_start_clearly(tmp_path: Path) -> None:
    from connectors.pbxsim import PbxSimulator

    async with PbxSimulator(username="hub", secret="right") as sim:
        with pytest.raises(AuthError) as err:
            async with running_hub(_config(tmp_path, sim.port, "wrong"), only={"telephony"}):
                pass
        assert f"127.0.0.1:{sim.port}" in str(err.value) and "hub" in str(err.value)
        logins = [a for a in sim.actions if a.get("Action") == "Login"]
        assert len(logins) == 1


async def test_unreachable_asterisk_does_not_stop_commhub(tmp_path: Path) -> None:
    async with running_hub(_config(tmp_path, free_port(), "x"), only={"telephony"}) as hub:
        assert hub.part("calls") is not None
        assert not hub.part("pbx").connected
