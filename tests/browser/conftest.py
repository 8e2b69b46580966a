"""Browser tests: Debian's chromium driven by Playwright (never a downloaded browser).

One browser for the whole session. Playwright lives on its own thread and event loop, because
each test's app (and the live_hub fixture) runs on that test's own loop; a `Remote` wrapper sends
every Playwright call to the browser thread, so tests read like plain async Playwright code:

    page = await pages.login(app_url, "anna")
    await page.fill("#find", "Max")
    await expect(page.locator("#card-name")).to_have_text("Max")
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from hub.config import Config, SmtpConfig, load_config
from hub.runtime import running_hub
from hub.services import Hub
from tests.conftest import CI, ROOT, add_user, free_port
from tests.hub.campaigns.helpers import MemorySink, smtp_server
from web.app import create_app

CHROMIUM = Path(os.environ.get("COMMHUB_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
LAPTOP = {"width": 1366, "height": 900}
TABLET = {"width": 820, "height": 1180}  # iPad Air portrait
TIMEOUT_MS = 15_000


class BrowserThread:
    """Playwright + chromium on a private event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="playwright", daemon=True)
        self.playwright: Any = None
        self.browser: Any = None

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        """Run a coroutine on the browser loop from synchronous code."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def run(self, awaitable: Any) -> Any:
        """Await something on the browser loop without blocking the caller's loop."""
        if not inspect.iscoroutine(awaitable):
            awaitable = _await(awaitable)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(awaitable, self.loop))

    def start(self) -> None:
        """Start the driver and launch chromium."""
        self.thread.start()
        self.call(self._start())

    async def _start(self) -> None:
        from playwright.async_api import async_playwright

        self.playwright = await async_playwright().start()
        self.browser = await self.playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=ARGS
        )

    def stop(self) -> None:
        """Close the browser, the driver and the loop."""
        try:
            self.call(self._stop(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            if not self.thread.is_alive():
                self.loop.close()

    async def _stop(self) -> None:
        if self.browser is not None:
            await self.browser.close()
        if self.playwright is not None:
            await self.playwright.stop()


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _is_playwright(value: Any) -> bool:
    return type(value).__module__.startswith("playwright.")


def unwrap(value: Any) -> Any:
    """The Playwright object inside a Remote (arguments must be the real thing)."""
    return value._target if isinstance(value, Remote) else value


class Remote:
    """A Playwright object used from the test's loop. Playwright is not thread-safe, so every
    method runs on the browser thread: `async def` methods as a coroutine awaited there, plain
    ones (locator(), on(), set_default_timeout() ...) synchronously, the caller waiting briefly."""

    __slots__ = ("_bt", "_target")

    def __init__(self, target: Any, bt: BrowserThread) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_bt", bt)

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._wrap(v) for v in value]
        return Remote(value, self._bt) if _is_playwright(value) else value

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value) or isinstance(value, type):
            return self._wrap(value)

        def invoke(*args: Any, **kwargs: Any) -> Any:
            return value(*map(unwrap, args), **{k: unwrap(v) for k, v in kwargs.items()})

        if inspect.iscoroutinefunction(value):

            async def call_async(*args: Any, **kwargs: Any) -> Any:
                return self._wrap(await self._bt.run(invoke(*args, **kwargs)))

            return call_async

        def call_sync(*args: Any, **kwargs: Any) -> Any:
            async def there() -> Any:
                result = invoke(*args, **kwargs)
                return await result if inspect.isawaitable(result) else result

            return self._wrap(self._bt.call(there(), timeout=30))

        return call_sync

    def __repr__(self) -> str:
        return f"Remote({self._target!r})"


@pytest.fixture(scope="session")
def browser_thread() -> Iterator[BrowserThread]:
    """One chromium for the session; skipped locally (failed under CI=true) if not installed."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} not found (apt-get install chromium); browser tests need it"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    bt = BrowserThread()
    bt.start()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield bt
    bt.stop()


class Pages:
    """Opens logged-in pages in fresh browser contexts; collects script errors; screenshots."""

    def __init__(self, bt: BrowserThread) -> None:
        self.bt = bt
        self.contexts: list[Any] = []
        self.errors: list[str] = []

    async def new(self, viewport: dict[str, int] | None = None, **options: Any) -> Remote:
        """A new page in its own context (own cookies), with error collection."""
        errors = self.errors

        def console(msg: Any) -> None:
            if msg.type == "error" and "Content Security Policy" in msg.text:
                errors.append(f"CSP: {msg.text}")

        async def open_page() -> Any:
            context = await self.bt.browser.new_context(viewport=viewport or LAPTOP, **options)
            context.set_default_timeout(TIMEOUT_MS)
            self.contexts.append(context)
            page = await context.new_page()
            page.on("pageerror", lambda err: errors.append(f"page error: {err}"))
            page.on("console", console)
            return page

        return Remote(await self.bt.run(open_page()), self.bt)

    async def login(
        self,
        base_url: str,
        username: str,
        password: str = "correct horse battery",
        path: str = "/",
        viewport: dict[str, int] | None = None,
    ) -> Remote:
        """A page logged in through the real login form, then at `path`."""
        page = await self.new(viewport)
        await page.goto(f"{base_url}/login?next={path}")
        await page.fill("input[name=username]", username)
        await page.fill("input[name=password]", password)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{base_url}{path}" if path != "/" else f"{base_url}/**")
        return page

    async def shot(self, page: Remote, name: str, full_page: bool = True) -> Path:
        """Save a screenshot as a test artifact."""
        path = SCREENSHOTS / f"{name}.png"
        await page.screenshot(path=str(path), full_page=full_page)
        return path

    async def download(self, page: Remote, selector: str) -> tuple[str, bytes]:
        """Click something that downloads; returns (suggested file name, content)."""

        async def go(raw: Any) -> tuple[str, bytes]:
            async with raw.expect_download() as info:
                await raw.click(selector)
            download = await info.value
            return download.suggested_filename, Path(await download.path()).read_bytes()

        result: tuple[str, bytes] = await self.bt.run(go(unwrap(page)))
        return result

    async def close(self) -> None:
        """Close every context this test opened."""
        for context in self.contexts:
            await self.bt.run(context.close())


@pytest.fixture
async def pages(browser_thread: BrowserThread) -> AsyncIterator[Pages]:
    """Per-test page factory; fails the test on uncaught script errors or CSP violations."""
    p = Pages(browser_thread)
    yield p
    await p.close()
    assert not p.errors, p.errors


@pytest.fixture
def expect(browser_thread: BrowserThread) -> Callable[[Any], Remote]:
    """Playwright's expect(), remote."""
    from playwright.async_api import expect as pw_expect

    pw_expect.set_options(timeout=TIMEOUT_MS)

    def make(target: Any) -> Remote:
        return Remote(pw_expect(unwrap(target)), browser_thread)

    return make


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """The shared test config, plus a recordings directory so the player has files to play."""
    (tmp_path / "recordings").mkdir()
    return load_config(
        environ={
            "COMMHUB_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/commhub.db",
            "COMMHUB_WEB_SECRET_KEY": "test-secret-key-0123456789abcdef",
            "COMMHUB_PHONE_DEFAULT_REGION": "DE",
            "COMMHUB_SMS_WEBHOOK_SECRET": "test-webhook-secret",
            "COMMHUB_AMI_RECORDINGS_DIR": str(tmp_path / "recordings"),
        }
    )


@pytest.fixture
def app_url(client: TestClient[Any, Any]) -> str:
    """Base URL of the test app (aiohttp's TestServer listens on a real loopback port)."""
    return str(client.make_url("")).rstrip("/")


@dataclass
class MailHub:
    """The web app with the email sender and the campaign engine, mail going into `sink`."""

    url: str
    hub: Hub
    sink: MemorySink


@pytest.fixture
async def mail_hub(config: Config, tmp_path: Path) -> AsyncIterator[MailHub]:
    """Users mia (marketer) and anna (agent); [smtp] goes to an in-process aiosmtpd; the
    campaign engine ticks fast."""
    sink = MemorySink()
    async with smtp_server(sink) as smtp_port:
        cfg = replace(
            config,
            smtp=replace(
                SmtpConfig(), host="127.0.0.1", port=smtp_port, from_address="news@shop.test"
            ),
            campaigns=replace(
                config.campaigns, tick_seconds=0.2, journal_dir=str(tmp_path / "journal")
            ),
        )
        async with running_hub(cfg, only={"email", "campaigns"}) as hub:
            await add_user(hub, "mia", "marketer")
            await add_user(hub, "anna", "agent", extension="201", devices=("PJSIP/201",))
            port = free_port()
            runner = web.AppRunner(create_app(hub), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            try:
                yield MailHub(f"http://127.0.0.1:{port}", hub, sink)
            finally:
                await runner.cleanup()
