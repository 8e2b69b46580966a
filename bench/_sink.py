"""The SMTP sink the email and campaign benchmarks send into, run in its own process so it
does not share the sender's CPU: counts accepted messages and answers NOOP with the count."""

from __future__ import annotations

import asyncio
import signal


def run_sink(port: int) -> None:
    """Serve on 127.0.0.1:port until SIGTERM; prints "ready" once listening."""
    from aiosmtpd.smtp import SMTP

    class Counter:
        count = 0

        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            Counter.count += 1
            return "250 OK"

        async def handle_NOOP(
            self, server: object, session: object, envelope: object, arg: str
        ) -> str:
            return f"250 count={Counter.count}"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(Counter(), hostname="sink.test"), "127.0.0.1", port
        )
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        server.close()

    asyncio.run(main())


async def sink_count(port: int) -> int:
    """How many messages the sink has accepted so far."""
    import aiosmtplib

    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="bench")
    await smtp.connect()
    reply = await smtp.noop()
    await smtp.quit()
    return int(reply.message.split("count=")[1])
