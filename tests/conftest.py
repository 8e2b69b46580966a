"""Shared fixtures: databases (SQLite and real PostgreSQL), peers, config, the web app."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hub.config import Config, DatabaseConfig, load_config
from hub.db import create_engine, session_factory
from hub.eventloop import loop_factory
from hub.migrate import upgrade
from hub.services import Hub

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("COMMHUB_SHARED", ROOT.parent / "shared"))

# Real peers started by scripts/peers.sh (make test does it); name -> port on 127.0.0.1.
PEERS = {
    "postgres": 15432,
    "redis": 16379,
    "dovecot": 10143,
    "postfix": 10525,
    "kannel": 13013,
}
PG_ADMIN_URL = os.environ.get("COMMHUB_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:15432")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections there."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


async def until(check: Callable[[], bool], within: float = 15.0, what: str = "condition") -> None:
    """Wait for `check()` to become true (a bound on waiting, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


def require_peer(name: str) -> None:
    """Skip (locally) or fail (CI=true) when a real peer is not running."""
    port = PEERS[name]
    if port_open(port):
        return
    message = f"peer {name} is not running on 127.0.0.1:{port} (start it: scripts/peers.sh start)"
    if CI:
        pytest.fail(message)
    pytest.skip(message)


def require_path(path: Path, what: str) -> Path:
    """Skip (locally) or fail (CI=true) when shared data such as ../shared/traces is absent."""
    if path.exists():
        return path
    message = f"{what} not found at {path}"
    if CI:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_SQLITE_TEMPLATE: Path | None = None


def migrated_sqlite(target: Path) -> str:
    """A migrated SQLite file at `target` (copied from one migrated template per test session)."""
    global _SQLITE_TEMPLATE
    import shutil
    import tempfile

    if _SQLITE_TEMPLATE is None:
        folder = Path(tempfile.mkdtemp(prefix="commhub-template-"))
        template = folder / "template.db"

        async def build() -> None:
            engine = create_engine(DatabaseConfig(url=f"sqlite+aiosqlite:///{template}"))
            await upgrade(engine)
            await engine.dispose()

        import threading

        # Run in a thread: this may be called from inside a running event loop.
        worker = threading.Thread(target=lambda: asyncio.run(build()))
        worker.start()
        worker.join()
        _SQLITE_TEMPLATE = template
    shutil.copyfile(_SQLITE_TEMPLATE, target)
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """Defaults with a throw-away (already migrated) SQLite file and a fixed secret."""
    migrated_sqlite(tmp_path / "commhub.db")
    return load_config(
        environ={
            "COMMHUB_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/commhub.db",
            "COMMHUB_WEB_SECRET_KEY": "test-secret-key-0123456789abcdef",
            "COMMHUB_PHONE_DEFAULT_REGION": "DE",
            "COMMHUB_SMS_WEBHOOK_SECRET": "test-webhook-secret",
        }
    )


_pg_template_lock = asyncio.Lock()
_pg_template_ready = False
# One template per test process: parallel runs on one server must not drop each other's.
PG_TEMPLATE = f"commhub_template_{os.getpid()}"


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL.replace("+asyncpg", ""), database="postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def pg_database() -> str:
    """A fresh migrated PostgreSQL database (copied from a migrated template); returns its URL."""
    global _pg_template_ready
    require_peer("postgres")
    async with _pg_template_lock:
        if not _pg_template_ready:
            await _pg_admin(f"DROP DATABASE IF EXISTS {PG_TEMPLATE}")
            await _pg_admin(f"CREATE DATABASE {PG_TEMPLATE}")
            engine = create_engine(DatabaseConfig(url=f"{PG_ADMIN_URL}/{PG_TEMPLATE}"))
            await upgrade(engine)
            await engine.dispose()
            _pg_template_ready = True
    name = f"t_{uuid.uuid4().hex[:12]}"
    await _pg_admin(f"CREATE DATABASE {name} TEMPLATE {PG_TEMPLATE}")
    return f"{PG_ADMIN_URL}/{name}"


async def drop_pg_database(url: str) -> None:
    """Remove a test database."""
    name = url.rsplit("/", 1)[1]
    await _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session", autouse=True)
def _drop_pg_template() -> Iterator[None]:
    """Remove this process's PostgreSQL template at the end of the run."""
    yield
    if _pg_template_ready:
        asyncio.run(_pg_admin(f"DROP DATABASE IF EXISTS {PG_TEMPLATE} WITH (FORCE)"))


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated database URL, on SQLite and on a real PostgreSQL."""
    if request.param == "sqlite":
        yield migrated_sqlite(tmp_path / "commhub.db")
    else:
        url = await pg_database()
        yield url
        await drop_pg_database(url)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the migrated database."""
    eng = create_engine(DatabaseConfig(url=db_url))
    yield eng
    await eng.dispose()


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated SQLite engine only (for tests where the backend does not matter)."""
    eng = create_engine(DatabaseConfig(url=migrated_sqlite(tmp_path / "commhub.db")))
    yield eng
    await eng.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Session factory on the parametrised database."""
    return session_factory(engine)


@pytest.fixture
def traces_dir() -> Path:
    """../shared/traces (third-party cacofonisk data stays outside the repo)."""
    return require_path(SHARED / "traces", "shared AMI traces")


@pytest.fixture(autouse=True)
def _no_leaked_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests must not pick up a developer's COMMHUB_* environment."""
    for key in list(os.environ):
        if key.startswith("COMMHUB_") and key not in ("COMMHUB_SHARED", "COMMHUB_TEST_PG"):
            monkeypatch.delenv(key)
    yield


@pytest.fixture
async def hub(config: Config) -> AsyncIterator[Hub]:
    """A migrated hub on SQLite with no connectors (tests add the parts they need)."""
    from hub.runtime import running_hub

    async with running_hub(config, connectors=False) as running:
        yield running


@pytest.fixture
async def client(hub: Hub) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """An aiohttp test client on the real app (real HTTP over loopback)."""
    from web.app import create_app

    app = create_app(hub)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def add_user(
    hub: Hub,
    username: str,
    role: str,
    *,
    password: str = "correct horse battery",
    extension: str | None = None,
    devices: tuple[str, ...] = (),
) -> str:
    """Create a user and return an API token for them."""
    from hub.users import create_token, create_user

    async with hub.sessions() as session, session.begin():
        await create_user(
            session,
            username,
            password,
            role,
            extension=extension,
            devices=devices,
            password_hash=_password_hash(password),
        )
        return await create_token(session, username)


_HASHES: dict[str, str] = {}


def _password_hash(password: str) -> str:
    """Argon2 is slow on purpose; tests hash each distinct password once."""
    from hub.users import hash_password

    if password not in _HASHES:
        _HASHES[password] = hash_password(password)
    return _HASHES[password]


def bearer(token: str) -> dict[str, str]:
    """Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}


class LiveHub:
    """A running commhub (web app on a real port) wired to a PBX simulator."""

    def __init__(
        self, url: str, hub: Hub, sim: object, tokens: dict[str, str], app: web.Application
    ) -> None:
        self.url = url
        self.hub = hub
        self.sim = sim
        self.tokens = tokens
        self.app = app

    @property
    def calls(self) -> object:
        """The CallService."""
        return self.hub.part("calls")

    @property
    def ws_url(self) -> str:
        """Websocket URL (add ?token=)."""
        return self.url.replace("http://", "ws://") + "/ws"


# The agents every live_hub has: user name → (extension, device).
LIVE_AGENTS = {
    "anna": ("201", "PJSIP/201"),
    "ben": ("202", "PJSIP/202"),
    "carl": ("203", "PJSIP/203"),
}


@pytest.fixture
async def live_hub(tmp_path: Path) -> AsyncIterator[LiveHub]:
    """PBX simulator + hub with the real AMI connector and call service + web app on a port.

    Users: agents anna/ben/carl (extensions 201-203, PJSIP/20x), supervisor sam; tokens in
    .tokens; password for all "correct horse battery"."""
    from connectors.pbxsim import PbxSimulator
    from hub.runtime import running_hub
    from web.app import create_app

    sim = PbxSimulator(username="hub", secret="hubsecret")
    await sim.start()
    port = free_port()
    config = load_config(
        environ={
            "COMMHUB_DATABASE_URL": migrated_sqlite(tmp_path / "commhub.db"),
            "COMMHUB_WEB_SECRET_KEY": "test-secret-key-0123456789abcdef",
            "COMMHUB_WEB_PORT": str(port),
            "COMMHUB_AMI_ENABLED": "true",
            "COMMHUB_AMI_PORT": str(sim.port),
            "COMMHUB_AMI_USERNAME": "hub",
            "COMMHUB_AMI_SECRET": "hubsecret",
            "COMMHUB_AMI_PING_INTERVAL": "1.0",
            "COMMHUB_AMI_ORIGINATE_CONTEXT": "from-internal",
        }
    )
    # Users must exist before the call service loads its agent directory.
    async with running_hub(config, connectors=False) as setup_hub:
        tokens = {}
        for name, (ext, device) in LIVE_AGENTS.items():
            tokens[name] = await add_user(
                setup_hub, name, "agent", extension=ext, devices=(device,)
            )
        tokens["sam"] = await add_user(setup_hub, "sam", "supervisor")
    try:
        async with running_hub(config, only={"telephony"}) as running:
            app = create_app(running)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            try:
                yield LiveHub(f"http://127.0.0.1:{port}", running, sim, tokens, app)
            finally:
                await runner.cleanup()
    finally:
        await sim.stop()


# Async tests run on the loop the product runs on (hub/eventloop.py: uvloop, a dependency here).
# Those closest to the sockets run on asyncio's own loop as well: it is the fallback where uvloop
# is missing, and the loops differ in how transports behave at the edges.
BOTH_LOOPS = ("tests/connectors/smtp/", "tests/connectors/ami/", "tests/hub/campaigns/test_engine")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    product = loop_factory("auto")
    if product is asyncio.new_event_loop:
        if CI:
            pytest.fail("uvloop is not installed (a dependency of commhub on this platform)")
        return {"asyncio": product}
    path = Path(str(item.path)).relative_to(ROOT).as_posix()
    if path.startswith(BOTH_LOOPS):
        return {"uvloop": product, "asyncio": asyncio.new_event_loop}
    return {"uvloop": product}
