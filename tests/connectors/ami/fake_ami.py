"""A small scriptable AMI server over real TCP, speaking the frames of the asterisk22 traces.

It stands in for Asterisk in the link tests (login, keepalive, drops, garbage, Originate); the call
flow tests use connectors.pbxsim when it is there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping

BANNER = b"Asterisk Call Manager/11.0.0\r\n"


def frame(fields: Mapping[str, str] | Iterable[tuple[str, str]]) -> bytes:
    """One AMI frame: Key: Value lines and a blank line, CRLF everywhere."""
    items = fields.items() if isinstance(fields, Mapping) else fields
    return "".join(f"{k}: {v}\r\n" for k, v in items).encode() + b"\r\n"


def parse(raw: bytes) -> dict[str, str]:
    """An action as a dict; repeated keys (Variable) are joined with newlines."""
    out: dict[str, str] = {}
    for line in raw.decode().split("\r\n"):
        key, sep, value = line.partition(": ")
        if sep:
            out[key] = f"{out[key]}\n{value}" if key in out else value
    return out


class _Conn:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.silent = False
        self.logged_in = False


class FakeAmi:
    """Accepts AMI clients on 127.0.0.1; records every action in `actions`."""

    def __init__(self, username: str = "hub", secret: str = "hubsecret", port: int = 0) -> None:
        self.username = username
        self.secret = secret
        self.port = port
        self.connections = 0
        self.actions: list[dict[str, str]] = []
        self.channels: list[dict[str, str]] = []
        # "success", "error" or "drop" (close the socket without answering)
        self.originate_reply = "success"
        self.originate_error = "Extension does not exist."
        self.originate_response_event = True
        self.after_login: list[dict[str, str]] = []  # events written together with the Login answer
        self.during_list: list[dict[str, str]] = []  # events written between CoreShowChannel items
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> FakeAmi:
        """Listen; `port` is the real port afterwards."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Close the listener and every connection, and wait for their handlers."""
        if self._server is not None:
            self._server.close()
        await self.drop_clients()
        if self._server is not None:
            await self._server.wait_closed()
        if self._handlers:
            await asyncio.wait(self._handlers)

    async def __aenter__(self) -> FakeAmi:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def count(self, action: str) -> int:
        """How many actions of this name arrived, over all connections."""
        return sum(1 for a in self.actions if a.get("Action") == action)

    def silence(self) -> None:
        """Current connections stay open but answer nothing any more (a dead link)."""
        for conn in self._conns:
            conn.silent = True

    async def drop_clients(self) -> None:
        """Close every client connection (as an Asterisk restart would)."""
        for conn in list(self._conns):
            conn.writer.close()
        for conn in list(self._conns):
            with contextlib.suppress(ConnectionError):
                await conn.writer.wait_closed()

    async def send(self, *events: Mapping[str, str]) -> None:
        """Write events to every logged-in client."""
        await self.send_raw(b"".join(frame(e) for e in events))

    async def send_raw(self, data: bytes) -> None:
        """Write raw bytes to every logged-in client."""
        for conn in list(self._conns):
            if conn.logged_in:
                conn.writer.write(data)
                with contextlib.suppress(ConnectionError):
                    await conn.writer.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        conn = _Conn(writer)
        self._conns.add(conn)
        try:
            writer.write(BANNER)
            while True:
                action = parse(await reader.readuntil(b"\r\n\r\n"))
                self.actions.append(action)
                if not conn.silent and not await self._answer(conn, action):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._conns.discard(conn)
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, conn: _Conn, action: Mapping[str, str]) -> bool:
        """Answer one action; False closes the connection."""
        name = action.get("Action", "")
        aid = action.get("ActionID", "")
        out: list[bytes] = []
        keep = True
        if name == "Login":
            if action.get("Username") == self.username and action.get("Secret") == self.secret:
                conn.logged_in = True
                out.append(
                    frame(
                        {
                            "Response": "Success",
                            "ActionID": aid,
                            "Message": "Authentication accepted",
                        }
                    )
                )
                out.append(
                    frame(
                        {
                            "Event": "FullyBooted",
                            "Privilege": "system,all",
                            "Uptime": "4",
                            "LastReload": "4",
                            "Status": "Fully Booted",
                        }
                    )
                )
                out.extend(frame(e) for e in self.after_login)
            else:
                out.append(
                    frame(
                        {"Response": "Error", "ActionID": aid, "Message": "Authentication failed"}
                    )
                )
                keep = False
        elif name == "Ping":
            out.append(
                frame(
                    {
                        "Response": "Success",
                        "ActionID": aid,
                        "Ping": "Pong",
                        "Timestamp": "1795337168.944737",
                    }
                )
            )
        elif name == "CoreShowChannels":
            out.append(
                frame(
                    {
                        "Response": "Success",
                        "ActionID": aid,
                        "EventList": "start",
                        "Message": "Channels will follow",
                    }
                )
            )
            for i, chan in enumerate(self.channels):
                out.append(frame({"Event": "CoreShowChannel", "ActionID": aid, **chan}))
                if i == 0:
                    out.extend(frame(e) for e in self.during_list)
            if not self.channels:
                out.extend(frame(e) for e in self.during_list)
            out.append(
                frame(
                    {
                        "Event": "CoreShowChannelsComplete",
                        "ActionID": aid,
                        "EventList": "Complete",
                        "ListItems": str(len(self.channels)),
                    }
                )
            )
        elif name == "Originate":
            if self.originate_reply == "drop":
                return False
            if self.originate_reply == "error":
                out.append(
                    frame({"Response": "Error", "ActionID": aid, "Message": self.originate_error})
                )
            else:
                out.append(
                    frame(
                        {
                            "Response": "Success",
                            "ActionID": aid,
                            "Message": "Originate successfully queued",
                        }
                    )
                )
                if self.originate_response_event:
                    out.append(
                        frame(
                            {
                                "Event": "OriginateResponse",
                                "Privilege": "call,all",
                                "ActionID": aid,
                                "Response": "Failure",
                                "Channel": action.get("Channel", ""),
                                "Context": action.get("Context", ""),
                                "Exten": action.get("Exten", ""),
                                "Reason": "5",
                                "Uniqueid": "<null>",
                                "CallerIDNum": "<unknown>",
                                "CallerIDName": "<unknown>",
                            }
                        )
                    )
        elif name == "Hangup":
            if any(c.get("Channel") == action.get("Channel") for c in self.channels):
                out.append(
                    frame({"Response": "Success", "ActionID": aid, "Message": "Channel Hungup"})
                )
            else:
                out.append(
                    frame({"Response": "Error", "ActionID": aid, "Message": "No such channel"})
                )
        elif name == "Logoff":
            out.append(
                frame(
                    {"Response": "Goodbye", "ActionID": aid, "Message": "Thanks for all the fish."}
                )
            )
            keep = False
        else:
            out.append(
                frame({"Response": "Error", "ActionID": aid, "Message": "Invalid/unknown command"})
            )
        conn.writer.write(b"".join(out))
        await conn.writer.drain()
        return keep
