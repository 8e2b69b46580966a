"""The command line end to end: migrate, user add, token create, then `serve` answers that token."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

COMMHUB = str(Path(sys.executable).parent / "commhub")


@pytest.fixture
def cli_config(tmp_path: Path) -> Path:
    port = free_port()
    path = tmp_path / "commhub.toml"
    path.write_text(
        f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/cli.db"\n'
        f'[web]\nport = {port}\nsecret_key = "test-secret-key-0123456789abcdef"\n',
        encoding="utf-8",
    )
    return path


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("COMMHUB_")}


def run(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMMHUB, "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env(),
        cwd=config.parent,
        timeout=60,
        check=False,
    )


def get(url: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url)  # noqa: S310 (http://127.0.0.1 built here)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_user_token_and_a_request_with_it(cli_config):
    result = run(
        cli_config,
        "user",
        "add",
        "ann",
        "--role",
        "agent",
        "--extension",
        "201",
        "--device",
        "PJSIP/201",
        stdin="correct horse battery\n",
    )
    assert result.returncode == 0, result.stderr
    assert "user ann (agent) added" in result.stdout

    again = run(
        cli_config, "user", "add", "ann", "--role", "agent", stdin="correct horse battery\n"
    )
    assert again.returncode == 2
    assert "commhub: user 'ann' exists already" in again.stderr
    assert "Traceback" not in again.stderr

    result = run(cli_config, "token", "create", "--user", "ann")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith("chub_") and "\n" not in token  # only the token, once

    port = int(cli_config.read_text().split("port = ")[1].split()[0])
    base = f"http://127.0.0.1:{port}"
    log = cli_config.parent / "serve.log"
    with log.open("w") as log_file:
        server = subprocess.Popen(
            [COMMHUB, "--config", str(cli_config), "serve"],
            env=env(),
            cwd=cli_config.parent,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(300):  # until it listens (or died)
            if server.poll() is not None:
                pytest.fail(f"commhub serve exited: {log.read_text()}")
            try:
                status, _ = get(f"{base}/health")
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        else:
            pytest.fail("commhub serve did not start listening")
        assert status == 200
        status, body = get(f"{base}/api/v1/customers", token)
        assert status == 200 and body == {"items": [], "next": None}
        status, body = get(f"{base}/api/v1/session", token)
        assert status == 200 and body["user"]["username"] == "ann"
        assert body["user"]["extension"] == "201"
        status, body = get(f"{base}/api/v1/customers", token + "x")
        assert status == 401 and body["error"]["code"] == "unauthenticated"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    assert server.returncode == 0, log.read_text()
    # The product's loop by default: uvloop, a dependency on this platform.
    assert "(event loop: uvloop " in log.read_text()
    # Start-up objects are frozen out of the collector's full passes (a few tens of thousands).
    frozen = re.search(r"; (\d+) start-up objects kept out of the garbage", log.read_text())
    assert frozen is not None and int(frozen.group(1)) > 10_000, log.read_text()
