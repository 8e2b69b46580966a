"""`commhub demo`: everything embedded — SQLite, demo users and customers, the PBX simulator
placing realistic calls, an SMTP sink — and the web app, so a newcomer sees pops in seconds.

Part of the composition root: it may know connectors/ and web/."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import signal
from dataclasses import replace
from pathlib import Path

from aiohttp import web
from sqlalchemy import select

from hub.config import Config
from hub.customers import create_customer
from hub.errors import ValidationError
from hub.eventloop import freeze_startup_heap
from hub.models.customers import ContactPoint
from hub.models.users import User
from hub.runtime import running_hub
from hub.services import Hub
from hub.users import create_token, create_user

log = logging.getLogger(__name__)

DEMO_PASSWORD = "demo-password"  # noqa: S105 - printed on screen, demo only
DEMO_USERS = [
    # name, role, extension, device
    ("anna", "agent", "201", "PJSIP/201"),
    ("ben", "agent", "202", "PJSIP/202"),
    ("sam", "supervisor", None, None),
    ("mia", "marketer", None, None),
    ("admin", "admin", None, None),
]
FIRST = [
    "Max",
    "Erika",
    "Jonas",
    "Lena",
    "Paul",
    "Mia",
    "Felix",
    "Emma",
    "Lukas",
    "Hannah",
    "Tim",
    "Sofia",
]
LAST = [
    "Mustermann",
    "Schmidt",
    "Müller",
    "Weber",
    "Fischer",
    "Wagner",
    "Becker",
    "Hoffmann",
    "Koch",
]
COMPANIES = ["ACME GmbH", "Nordwind AG", "Bäckerei Sonne", "Stadtwerke Süd", "", "Kanzlei Roth"]
TAGS = ["vip", "lead", "newsletter", "support", "b2b"]
SOURCES = ["website", "trade fair", "referral", "google ads"]


async def seed(hub: Hub) -> str:
    """Demo users and customers (idempotent); returns an admin API token for curl."""
    rng = random.Random(7)  # the same demo every time
    async with hub.sessions() as session, session.begin():
        existing = set((await session.scalars(select(User.username))).all())
        for name, role, ext, device in DEMO_USERS:
            if name not in existing:
                await create_user(
                    session,
                    name,
                    DEMO_PASSWORD,
                    role,
                    extension=ext,
                    devices=(device,) if device else (),
                )
        if not await session.scalar(select(ContactPoint.id).limit(1)):
            await create_customer(
                session,
                {
                    "name": "Max Mustermann",
                    "company": "ACME GmbH",
                    "phones": ["+4930123456"],
                    "emails": ["max@example.test"],
                    "tags": ["vip", "b2b"],
                    "source": "trade fair",
                    "city": "Berlin",
                    "notes": "Prefers calls in the morning.",
                },
                hub.region,
            )
            for i in range(60):
                name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
                try:
                    await create_customer(
                        session,
                        {
                            "name": name,
                            "company": rng.choice(COMPANIES),
                            "phones": [f"+49301{i:06d}", f"+49151{rng.randrange(10**7, 10**8)}"],
                            "emails": [f"{name.split()[0].lower()}.{i}@example.test"],
                            "tags": rng.sample(TAGS, rng.randrange(0, 3)),
                            "source": rng.choice(SOURCES),
                            "city": rng.choice(["Berlin", "Hamburg", "München", "Köln"]),
                        },
                        hub.region,
                    )
                except ValidationError as err:  # a clash in random numbers: skip that one
                    log.debug("demo customer skipped: %s", err)
        return await create_token(session, "admin", "demo")


async def place_calls(sim: object, every: float) -> None:
    """Keep placing realistic calls: known and unknown callers, every scenario."""
    rng = random.Random()
    known = ["+4930123456"] + [f"+49301{i:06d}" for i in range(0, 60, 7)]
    weighted = (
        ["answered"] * 5
        + ["missed"] * 2
        + ["busy", "cancel", "queue", "blind_transfer", "anonymous"]
    )
    while True:
        await asyncio.sleep(every)
        scenario = rng.choice(weighted)
        caller = rng.choice(known) if rng.random() < 0.7 else f"+49{rng.randrange(10**9, 10**10)}"
        ext = rng.choice(["201", "202"])
        kwargs: dict[str, object] = {"ring": rng.uniform(2, 5), "talk": rng.uniform(4, 12)}
        if scenario == "queue":
            kwargs.update(members=["201", "202"], answered_by=rng.choice(["201", "202"]))
        if scenario == "blind_transfer":
            kwargs["transfer_to"] = "202" if ext == "201" else "201"
        try:
            await sim.place_call(scenario, caller=caller, extension=ext, **kwargs)  # type: ignore[attr-defined]
        except Exception:  # the demo must go on
            log.exception("demo call failed")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_demo(config: Config, *, port: int = 8080, calls_every: float = 8.0) -> None:
    """Run the demo until Ctrl-C."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    from connectors.pbxsim import PbxSimulator
    from web.app import create_app

    Path("var").mkdir(exist_ok=True)
    ami_secret = secrets.token_urlsafe(12)
    sim = PbxSimulator(username="commhub", secret=ami_secret, systemname="demo")
    # Click-to-call rings the agent's phone then the customer, at a human pace.
    sim.click_to_call_options.update(ring=2.0, talk=8.0)
    await sim.start()
    smtp = Controller(Sink(), hostname="127.0.0.1", port=_free_port())
    smtp.start()
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-connection chatter
    config = replace(
        config,
        web=replace(
            config.web,
            port=port,
            base_url=f"http://127.0.0.1:{port}",
            secret_key=config.web.secret_key or secrets.token_urlsafe(32),
        ),
        ami=replace(
            config.ami,
            enabled=True,
            host="127.0.0.1",
            port=sim.port,
            username="commhub",
            secret=ami_secret,
        ),
        smtp=replace(config.smtp, host="127.0.0.1", port=smtp.port, security="none"),
    )
    try:
        async with running_hub(config, connectors=False) as setup_hub:
            token = await seed(setup_hub)
        Path("var/demo-token.txt").write_text(token + "\n")
        async with running_hub(config) as hub:
            runner = web.AppRunner(create_app(hub), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, config.web.host, port).start()
            freeze_startup_heap()
            caller = asyncio.create_task(place_calls(sim, calls_every))
            print(
                f"\ncommhub demo on http://{config.web.host}:{port}\n"
                f"  log in as anna (agent, ext 201), ben (agent, 202), sam (supervisor), mia (marketer),"
                f" admin — password {DEMO_PASSWORD}\n"
                f"  API: curl -H 'Authorization: Bearer {token}' http://{config.web.host}:{port}/api/v1/customers\n"
                f"  (token also in var/demo-token.txt); the PBX simulator places a call every {calls_every:g} s\n"
                f"  Ctrl-C stops.\n",
                flush=True,
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, stop.set)
            try:
                await stop.wait()
            finally:
                caller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await caller
                await runner.cleanup()
    finally:
        smtp.stop()
        await sim.stop()
