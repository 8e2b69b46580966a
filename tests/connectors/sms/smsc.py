"""An SMSC for the SMPP tests, on smpp34's server (a Rust SMPP 3.4 engine from PyPI, not ours).

smpp34 does the protocol (framing, binds, sequence numbers, enquire_link answers); this wrapper
only decides what the SMSC says: accept with ids M1, M2, ..., throttle or reject on request,
send delivery receipts and MO messages back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import smpp34

ESME_RTHROTTLED = 0x58  # SMPP 3.4 §5.1.3 (smpp34 exports it from its extension module only)


@dataclass
class Submitted:
    """What the SMSC saw in one submit_sm."""

    message_id: str
    destination: str
    dest_ton: int
    source: str
    source_ton: int
    data_coding: int
    esm_class: int
    registered_delivery: int
    payload: bytes
    tlvs: dict[int, bytes] = field(default_factory=dict)


class TestSmsc:
    """smpp34.Server plus a policy; `receipts` = "DELIVRD" etc. answers every submit with one."""

    __test__ = False  # not a pytest class

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: Any = None
        self.esmes: dict[str, Any] = {}
        self.submitted: list[Submitted] = []
        self.held: list[Any] = []  # submit events not answered yet (hold=True)
        self.throttle = 0  # answer this many submits with ESME_RTHROTTLED first
        self.reject_with: int | None = None
        self.hold = False
        self.receipts: str | None = None
        self.receipt_for: Callable[[Submitted], str] | None = None
        self.binds = 0
        self.changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._count = 0
        self._side: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Listen on 127.0.0.1:port."""
        self.server = smpp34.Server(host="127.0.0.1", port=self.port, system_id="TESTSMSC")
        await self.server.start()
        self._task = asyncio.create_task(self._serve())

    async def stop(self) -> None:
        """Stop listening and drop every session (the ESME sees its link go)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._side):
            task.cancel()
        if self.server is not None:
            await self.server.stop()
        self.esmes.clear()

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Until predicate() holds."""
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(predicate)

    async def _serve(self) -> None:
        while True:
            event = await self.server.next()
            if isinstance(event, smpp34.Esme):
                self.esmes[event.session_id] = event
                self.binds += 1
            elif isinstance(event, smpp34.Unbound):
                self.esmes.pop(event.session_id, None)
            elif isinstance(event, smpp34.SubmitSmEvent):
                self._submit(event)
            await self._notify()

    def _submit(self, event: Any) -> None:
        if self.throttle > 0:
            self.throttle -= 1
            event.reject(ESME_RTHROTTLED)
            return
        if self.reject_with is not None:
            event.reject(self.reject_with)
            return
        self._count += 1
        sub = Submitted(
            message_id=f"M{self._count}",
            destination=event.destination_addr,
            dest_ton=event.dest_addr_ton,
            source=event.source_addr,
            source_ton=event.source_addr_ton,
            data_coding=event.data_coding,
            esm_class=event.esm_class,
            registered_delivery=event.registered_delivery,
            payload=bytes(event.short_message),
            tlvs={t.tag: bytes(t.value) for t in event.tlvs},
        )
        self.submitted.append(sub)
        if self.hold:
            self.held.append((event, sub))
            return
        self._answer(event, sub)

    def _answer(self, event: Any, sub: Submitted) -> None:
        event.accept(message_id=sub.message_id)
        stat = self.receipt_for(sub) if self.receipt_for else self.receipts
        if stat:
            task = asyncio.create_task(self.receipt(event.session_id, sub, stat))
            self._side.add(task)
            task.add_done_callback(self._side.discard)

    def release(self) -> None:
        """Answer every held submit."""
        held, self.held = self.held, []
        for event, sub in held:
            self._answer(event, sub)

    async def esme(self) -> Any:
        """The one bound ESME session (the bind may still be on its way to our event loop)."""
        await self.wait_for(lambda: bool(self.esmes))
        assert len(self.esmes) == 1, self.esmes
        return next(iter(self.esmes.values()))

    async def receipt(self, session_id: str | None, sub: Submitted, stat: str) -> int:
        """A delivery receipt (appendix B text) for one submit; returns the ESME's status."""
        esme = self.esmes[session_id] if session_id else await self.esme()
        text = (
            f"id:{sub.message_id} sub:001 dlvrd:{'001' if stat == 'DELIVRD' else '000'} "
            f"submit date:2401021504 done date:2401021505 stat:{stat} err:000 text:"
        )
        resp = await esme.deliver_sm(
            destination_addr=sub.source,
            source_addr=sub.destination,
            esm_class=0x04,
            short_message=text.encode(),
        )
        return int(resp.command_status)

    async def mo(
        self, sender: str, text: bytes, *, data_coding: int = 0, esm_class: int = 0, ton: int = 1
    ) -> int:
        """An MO message to the ESME; returns the deliver_sm_resp status it answered."""
        resp = await (await self.esme()).deliver_sm(
            destination_addr="12345",
            source_addr=sender,
            source_addr_ton=ton,
            source_addr_npi=1,
            data_coding=data_coding,
            esm_class=esm_class,
            short_message=text,
        )
        return int(resp.command_status)
