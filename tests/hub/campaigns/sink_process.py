"""A recording SMTP sink in its own process: `python sink_process.py PORT RECORD_FILE`.

Every accepted message appends one line "recipient<TAB>Message-ID" to RECORD_FILE with a single
os.write, so the record is complete whatever happens to the client. Prints "ready" when listening;
exits on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

from aiosmtpd.smtp import SMTP, Envelope, Session

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(\S+)", re.IGNORECASE | re.MULTILINE)


class Recorder:
    """aiosmtpd handler: one line per accepted recipient."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        match = _MESSAGE_ID.search(data)
        message_id = match.group(1).decode() if match else "-"
        lines = "".join(f"{rcpt}\t{message_id}\n" for rcpt in envelope.rcpt_tos)
        os.write(self.fd, lines.encode())
        return "250 OK"


async def main(port: int, path: str) -> None:
    """Serve until SIGTERM."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    loop = asyncio.get_running_loop()
    handler = Recorder(fd)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.test", loop=loop), "127.0.0.1", port
    )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()
    os.close(fd)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
