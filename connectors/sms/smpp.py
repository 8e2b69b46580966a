"""SMPP 3.4 straight to an SMSC: an asyncio ESME bound as transceiver.

One TCP link carries everything: submit_sm out (a window of outstanding PDUs, long texts as UDH or
SAR parts or one message_payload), deliver_sm in (MO messages and delivery receipts, answered
only once the hub has them, so the SMSC redelivers what we could not take), enquire_link both
ways, throttling answers (ESME_RTHROTTLED, ESME_RMSGQFUL) met with a shared backoff, and a rebind
with backoff whenever the link drops. The SMSC's ids for the parts of a long message are folded
into the first part's id, which is the message's gateway id; that map lives in memory, so a
receipt for a later part that arrives after a restart is parked by the hub as unknown."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, cast

from connectors.sms.const import (
    SMPP_ENQUIRE_INTERVAL,
    SMPP_HEADER,
    SMPP_MAX_PDU,
    SMPP_PORT,
    SMPP_RECEIPT_STATUS,
    SMPP_RECONNECT_MAX,
    SMPP_RECONNECT_MIN,
    SMPP_RESPONSE_TIMEOUT,
    SMPP_THROTTLE_BACKOFF,
    SMPP_THROTTLE_RETRIES,
    SMPP_WINDOW,
)
from connectors.sms.errors import GatewayThrottled, LinkDown
from hub.errors import AuthError, ConfigError, PermanentError, RetryableError
from hub.messaging.ports import OutgoingSms
from hub.sms.events import DeliveryReport, InboundSms, ReportStatus, SmsEventSink
from hub.sms.registry import GatewayContext
from hub.sms.text import (
    decode_gsm7,
    decode_ucs2,
    detect_encoding,
    encode_gsm7,
    encode_ucs2,
    split_parts,
)

log = logging.getLogger(__name__)
NAME = "smpp"

# --- command ids and statuses (SMPP 3.4 §5.1.2, §5.1.3) ---
GENERIC_NACK: Final = 0x80000000
BIND_TRANSCEIVER: Final = 0x00000009
BIND_TRANSCEIVER_RESP: Final = 0x80000009
SUBMIT_SM: Final = 0x00000004
SUBMIT_SM_RESP: Final = 0x80000004
DELIVER_SM: Final = 0x00000005
DELIVER_SM_RESP: Final = 0x80000005
UNBIND: Final = 0x00000006
UNBIND_RESP: Final = 0x80000006
ENQUIRE_LINK: Final = 0x00000015
ENQUIRE_LINK_RESP: Final = 0x80000015
DATA_SM: Final = 0x00000103
RESPONSE_BIT: Final = 0x80000000

ESME_ROK: Final = 0x00
ESME_RINVCMDID: Final = 0x03
ESME_RSYSERR: Final = 0x08
ESME_RBINDFAIL: Final = 0x0D
ESME_RINVPASWD: Final = 0x0E
ESME_RINVSYSID: Final = 0x0F
ESME_RMSGQFUL: Final = 0x14
ESME_RTHROTTLED: Final = 0x58
ESME_RX_T_APPN: Final = 0x64  # "temporary application error": the SMSC will redeliver
AUTH_FAILURES: Final = frozenset({ESME_RBINDFAIL, ESME_RINVPASWD, ESME_RINVSYSID})
THROTTLING: Final = frozenset({ESME_RTHROTTLED, ESME_RMSGQFUL})
ESME_RSUBMITFAIL: Final = 0x45
TRANSIENT: Final = frozenset({ESME_RSYSERR, ESME_RSUBMITFAIL, ESME_RX_T_APPN})

# --- TLV tags (§5.3.2) ---
TLV_RECEIPTED_MESSAGE_ID: Final = 0x001E
TLV_SAR_MSG_REF_NUM: Final = 0x020C
TLV_SAR_TOTAL_SEGMENTS: Final = 0x020E
TLV_SAR_SEGMENT_SEQNUM: Final = 0x020F
TLV_MESSAGE_PAYLOAD: Final = 0x0424
TLV_MESSAGE_STATE: Final = 0x0427
TLV_NETWORK_ERROR_CODE: Final = 0x0423
MESSAGE_STATE: Final[dict[int, str]] = {
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
}

ESM_UDHI: Final = 0x40
ESM_TYPE_MASK: Final = 0x3C
ESM_RECEIPT: Final = 0x04  # SMSC delivery receipt
ESM_INTERMEDIATE: Final = 0x20
DC_DEFAULT: Final = 0x00
DC_LATIN1: Final = 0x03
DC_UCS2: Final = 0x08


class SmppError(PermanentError):
    """The SMSC refused a PDU for good; `status` is its command_status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# --- the codec ---


@dataclass(frozen=True)
class Pdu:
    """One SMPP PDU: header fields and the raw body."""

    command_id: int
    status: int
    sequence: int
    body: bytes = b""

    def encode(self) -> bytes:
        """The PDU on the wire."""
        return (
            struct.pack(
                ">IIII", SMPP_HEADER + len(self.body), self.command_id, self.status, self.sequence
            )
            + self.body
        )


def cstring(value: str, max_len: int, what: str) -> bytes:
    """A C-Octet String (NUL-terminated ASCII); ValueError if it does not fit."""
    data = value.encode("ascii")
    if len(data) >= max_len:
        raise ValueError(f"{what} is longer than {max_len - 1} characters: {value!r}")
    return data + b"\x00"


class Reader:
    """Walks a PDU body: C-strings, integers, octets, then TLVs."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def cstring(self) -> str:
        """Up to the next NUL."""
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise ValueError("unterminated C-Octet String")
        value = self.data[self.pos : end].decode("latin-1")
        self.pos = end + 1
        return value

    def u8(self) -> int:
        """One octet."""
        if self.pos >= len(self.data):
            raise ValueError("PDU body too short")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def octets(self, n: int) -> bytes:
        """n octets."""
        if self.pos + n > len(self.data):
            raise ValueError("PDU body too short")
        value = self.data[self.pos : self.pos + n]
        self.pos += n
        return value

    def tlvs(self) -> dict[int, bytes]:
        """The optional parameters after the mandatory ones."""
        out: dict[int, bytes] = {}
        while self.pos + 4 <= len(self.data):
            tag, length = struct.unpack_from(">HH", self.data, self.pos)
            self.pos += 4
            out[tag] = self.octets(length)
        return out


def tlv(tag: int, value: bytes) -> bytes:
    """One optional parameter."""
    return struct.pack(">HH", tag, len(value)) + value


def address(number: str) -> tuple[int, int, str]:
    """(ton, npi, digits) for an address: +E.164 international, digits unknown, else alphanumeric."""
    if number.startswith("+") and number[1:].isdigit():
        return 1, 1, number[1:]
    if number.isdigit():
        return 0, 1, number
    return 5, 0, number[:11]


@dataclass(frozen=True)
class ShortMessage:
    """The fields of a submit_sm / deliver_sm that matter here."""

    source: str
    source_ton: int
    destination: str
    esm_class: int
    data_coding: int
    registered_delivery: int
    payload: bytes
    tlvs: Mapping[int, bytes] = field(default_factory=dict)


def encode_submit(
    *,
    source: str,
    destination: str,
    data_coding: int,
    payload: bytes,
    esm_class: int = 0,
    registered_delivery: int = 1,
    service_type: str = "",
    tlvs: bytes = b"",
) -> bytes:
    """A submit_sm body (§4.4.1)."""
    s_ton, s_npi, s_addr = address(source)
    d_ton, d_npi, d_addr = address(destination)
    if len(payload) > 254:
        raise ValueError("short_message longer than 254 octets (use message_payload)")
    return (
        cstring(service_type, 6, "service_type")
        + bytes((s_ton, s_npi))
        + cstring(s_addr, 21, "source_addr")
        + bytes((d_ton, d_npi))
        + cstring(d_addr, 21, "destination_addr")
        + bytes((esm_class, 0, 0))  # esm_class, protocol_id, priority_flag
        + b"\x00\x00"  # schedule_delivery_time, validity_period: SMSC defaults
        + bytes((registered_delivery, 0, data_coding, 0, len(payload)))
        + payload
        + tlvs
    )


def decode_short_message(body: bytes) -> ShortMessage:
    """A deliver_sm (or submit_sm) body; ValueError if it is malformed."""
    r = Reader(body)
    r.cstring()  # service_type
    source_ton = r.u8()
    r.u8()
    source = r.cstring()
    r.u8()
    r.u8()
    destination = r.cstring()
    esm_class = r.u8()
    r.u8()  # protocol_id
    r.u8()  # priority_flag
    r.cstring()  # schedule_delivery_time
    r.cstring()  # validity_period
    registered_delivery = r.u8()
    r.u8()  # replace_if_present_flag
    data_coding = r.u8()
    r.u8()  # sm_default_msg_id
    length = r.u8()
    payload = r.octets(length)
    tlvs = r.tlvs()
    if not payload and TLV_MESSAGE_PAYLOAD in tlvs:
        payload = tlvs[TLV_MESSAGE_PAYLOAD]
    return ShortMessage(
        source=source,
        source_ton=source_ton,
        destination=destination,
        esm_class=esm_class,
        data_coding=data_coding,
        registered_delivery=registered_delivery,
        payload=payload,
        tlvs=tlvs,
    )


def decode_text(payload: bytes, data_coding: int) -> str:
    """User data to text by data_coding: UCS-2, Latin-1, else GSM default alphabet (unpacked)."""
    coding = data_coding & 0x0F if data_coding & 0xF0 == 0xF0 else data_coding
    if coding == DC_UCS2:
        return decode_ucs2(payload)
    if coding == DC_LATIN1:
        return payload.decode("latin-1")
    if coding in (0x01, 0x04):  # IA5/ASCII, 8-bit binary: best effort
        return payload.decode("utf-8", errors="replace")
    return decode_gsm7(payload)


def split_udh(payload: bytes) -> tuple[bytes, bytes]:
    """(UDH with its length octet, the rest) of user data that carries a header."""
    if not payload:
        return b"", b""
    size = payload[0] + 1
    return payload[:size], payload[size:]


def concat_of(udh: bytes, tlvs: Mapping[int, bytes]) -> tuple[int, int, int] | None:
    """(reference, total, sequence) from a concatenation UDH (8- or 16-bit ref) or SAR TLVs."""
    body = udh[1:]
    i = 0
    while i + 2 <= len(body):
        iei, length = body[i], body[i + 1]
        value = body[i + 2 : i + 2 + length]
        if iei == 0x00 and length == 3:
            return value[0], value[1], value[2]
        if iei == 0x08 and length == 4:
            return (value[0] << 8) | value[1], value[2], value[3]
        i += 2 + length
    if TLV_SAR_MSG_REF_NUM in tlvs and TLV_SAR_TOTAL_SEGMENTS in tlvs:
        return (
            int.from_bytes(tlvs[TLV_SAR_MSG_REF_NUM], "big"),
            int.from_bytes(tlvs[TLV_SAR_TOTAL_SEGMENTS], "big"),
            int.from_bytes(tlvs.get(TLV_SAR_SEGMENT_SEQNUM, b"\x01"), "big"),
        )
    return None


@dataclass(frozen=True)
class Receipt:
    """A delivery receipt: the SMSC's message id and its stat/err words."""

    message_id: str
    stat: str
    err: str = ""
    done: datetime | None = None


def _receipt_time(value: str) -> datetime | None:
    # YYMMDDhhmm (appendix B), or with seconds as many SMSCs write it; UTC is assumed.
    fmt = {10: "%y%m%d%H%M", 12: "%y%m%d%H%M%S"}.get(len(value))
    if fmt is None or not value.isdigit():
        return None
    try:
        return datetime.strptime(value, fmt).replace(tzinfo=UTC)
    except ValueError:
        return None


_RECEIPT_FIELD: Final = re.compile(r"\b(id|sub|dlvrd|submit date|done date|stat|err|text):", re.I)


def parse_receipt(text: str, tlvs: Mapping[int, bytes]) -> Receipt:
    """The receipt in a deliver_sm: TLVs when the SMSC sends them, else the appendix B text
    ("id:... sub:001 dlvrd:001 submit date:2401021504 done date:2401021505 stat:DELIVRD err:000
    text:..."); ValueError when neither names a message."""
    marks = list(_RECEIPT_FIELD.finditer(text))
    fields: dict[str, str] = {}
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        fields.setdefault(mark.group(1).lower(), text[mark.end() : end].strip())
    message_id = ""
    if TLV_RECEIPTED_MESSAGE_ID in tlvs:
        message_id = tlvs[TLV_RECEIPTED_MESSAGE_ID].rstrip(b"\x00").decode("latin-1").strip()
    message_id = message_id or fields.get("id", "")
    stat = fields.get("stat", "").upper()
    if tlvs.get(TLV_MESSAGE_STATE):
        stat = MESSAGE_STATE.get(tlvs[TLV_MESSAGE_STATE][0], stat) or stat
    if not message_id or not stat:
        raise ValueError(f"not a delivery receipt: {text[:120]!r}")
    return Receipt(
        message_id, stat, fields.get("err", ""), _receipt_time(fields.get("done date", ""))
    )


# --- the gateway ---


@dataclass(frozen=True)
class SmppSettings:
    """[sms.smpp]: where the SMSC is, how we bind, and how we send."""

    host: str = "127.0.0.1"
    port: int = SMPP_PORT
    system_id: str = ""
    password: str = ""
    system_type: str = ""
    sender: str = ""
    window: int = SMPP_WINDOW
    enquire_link_interval: float = SMPP_ENQUIRE_INTERVAL
    response_timeout: float = SMPP_RESPONSE_TIMEOUT
    reconnect_min: float = SMPP_RECONNECT_MIN
    reconnect_max: float = SMPP_RECONNECT_MAX
    throttle_backoff: float = SMPP_THROTTLE_BACKOFF
    throttle_retries: int = SMPP_THROTTLE_RETRIES
    concatenation: str = "udh"  # udh | sar | payload
    # How receipts write the SMSC's id compared with submit_sm_resp (Kannel's msg-id-type).
    receipt_id: str = "same"  # same | hex_to_dec | dec_to_hex
    send_wait: float = 10.0  # how long send() waits for a link that is being re-established

    @classmethod
    def from_context(cls, ctx: GatewayContext) -> SmppSettings:
        """Read and check [sms.smpp]."""
        raw = dict(ctx.settings)
        where = f"{ctx.config.source}: [sms.smpp]"
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        if not raw.get("system_id"):
            raise ConfigError(f"{where} system_id is required")
        values: dict[str, Any] = {}
        kinds: dict[str, Callable[[Any], Any]] = {"int": int, "float": float, "str": str}
        for name, f in cls.__dataclass_fields__.items():
            if name not in raw:
                continue
            kind = kinds[str(f.type)]
            try:
                values[name] = kind(raw[name])
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{where} {name}: {err}") from err
        values.setdefault("sender", ctx.config.sms.sender)
        settings = cls(**values)
        if settings.concatenation not in ("udh", "sar", "payload"):
            raise ConfigError(f"{where} concatenation must be udh, sar or payload")
        if settings.receipt_id not in ("same", "hex_to_dec", "dec_to_hex"):
            raise ConfigError(f"{where} receipt_id must be same, hex_to_dec or dec_to_hex")
        if settings.window < 1:
            raise ConfigError(f"{where} window must be at least 1")
        return settings


@dataclass
class _Multipart:
    """The parts of one long message: their ids and what each one's receipt said."""

    main_id: str
    part_ids: tuple[str, ...]
    outcomes: dict[str, Receipt] = field(default_factory=dict)


class SmppGateway:
    """SmsGateway over one SMPP 3.4 transceiver bind; reports MO/receipts into an SmsEventSink."""

    name = NAME
    MAX_TRACKED = 100_000  # multi-part messages whose receipts we still fold together

    def __init__(self, settings: SmppSettings, sink: SmsEventSink | None = None) -> None:
        self.settings = settings
        self.sink = sink
        self._seq = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Pdu]] = {}
        self._window = asyncio.Semaphore(settings.window)
        self._writer: asyncio.StreamWriter | None = None
        self._bound = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._resume_at = 0.0  # monotonic time before which nobody submits (throttled)
        self._ref = random.randrange(0, 0x10000)
        self._multipart: OrderedDict[str, _Multipart] = OrderedDict()
        self._mo_parts: dict[tuple[str, int], dict[int, str]] = {}
        self._first_attempt: asyncio.Future[BaseException | None] | None = None
        self._closing = False
        self.binds = 0  # successful binds so far (rebinds show here)

    # --- lifecycle ---

    async def start(self) -> None:
        """Connect and bind in the background; raise AuthError if the SMSC refuses our login.

        An unreachable SMSC is logged and retried: commhub must come up without it."""
        loop = asyncio.get_running_loop()
        self._first_attempt = loop.create_future()
        self._task = asyncio.create_task(self._run(), name="smpp-link")
        outcome = await self._first_attempt
        if isinstance(outcome, AuthError):
            await self.close()
            raise outcome
        if outcome is not None:
            log.warning("SMPP: %s; retrying in the background", outcome)

    @property
    def bound(self) -> bool:
        """True while the transceiver bind is up."""
        return self._bound.is_set()

    async def close(self) -> None:
        """Unbind politely, stop reconnecting, fail whatever still waits for an answer."""
        self._closing = True
        if self._bound.is_set() and self._writer is not None:
            with contextlib.suppress(RetryableError, TimeoutError, OSError):
                await asyncio.wait_for(self._request(UNBIND, b""), 1.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._drop_link(LinkDown("SMPP gateway closed"))

    def _settle_first(self, outcome: BaseException | None) -> None:
        if self._first_attempt is not None and not self._first_attempt.done():
            self._first_attempt.set_result(outcome)

    async def _run(self) -> None:
        """Connect, bind, read until the link drops; again, with backoff, until closed."""
        s = self.settings
        delay = s.reconnect_min
        while not self._closing:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(s.host, s.port), s.response_timeout
                )
            except (OSError, TimeoutError) as err:
                self._settle_first(
                    RetryableError(f"cannot reach SMSC {s.host}:{s.port}: {err or 'timeout'}")
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, s.reconnect_max)
                continue
            self._writer = writer
            reading = asyncio.create_task(self._read(reader), name="smpp-read")
            try:
                await self._bind()
            except AuthError as err:
                self._settle_first(err)
                log.error("SMPP: %s", err)
                reading.cancel()
                self._drop_link(LinkDown(str(err)))
                await asyncio.sleep(s.reconnect_max)
                continue
            except (RetryableError, TimeoutError) as err:
                self._settle_first(RetryableError(f"SMPP bind failed: {err}"))
                reading.cancel()
                self._drop_link(LinkDown(str(err)))
                await asyncio.sleep(delay)
                delay = min(delay * 2, s.reconnect_max)
                continue
            self.binds += 1
            delay = s.reconnect_min
            self._bound.set()
            self._settle_first(None)
            log.info("SMPP: bound as transceiver to %s:%s", s.host, s.port)
            keepalive = asyncio.create_task(self._keepalive(), name="smpp-enquire-link")
            try:
                await reading
            except (OSError, ValueError, asyncio.IncompleteReadError, RetryableError) as err:
                if not self._closing:
                    log.warning(
                        "SMPP: link to %s:%s lost: %s", s.host, s.port, err or type(err).__name__
                    )
            finally:
                keepalive.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keepalive
                if not reading.done():
                    reading.cancel()
                self._drop_link(LinkDown("SMPP link lost; rebinding"))
            if not self._closing:
                log.info("SMPP: link down, rebinding in %.1fs", delay)
                await asyncio.sleep(delay)

    def _drop_link(self, error: RetryableError) -> None:
        self._bound.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    async def _bind(self) -> None:
        s = self.settings
        body = (
            cstring(s.system_id, 16, "system_id")
            + cstring(s.password, 9, "password")
            + cstring(s.system_type, 13, "system_type")
            + bytes((0x34, 0, 0))  # interface_version 3.4, addr_ton, addr_npi
            + b"\x00"  # address_range
        )
        resp = await self._request(BIND_TRANSCEIVER, body)
        if resp.status in AUTH_FAILURES:
            raise AuthError(f"SMSC refused bind for {s.system_id!r}: status 0x{resp.status:02X}")
        if resp.status != ESME_ROK:
            raise RetryableError(f"SMSC refused bind: status 0x{resp.status:02X}")

    async def _keepalive(self) -> None:
        """enquire_link every interval; no answer within the timeout means the link is dead."""
        while True:
            await asyncio.sleep(self.settings.enquire_link_interval)
            try:
                await self._request(ENQUIRE_LINK, b"")
            except (RetryableError, TimeoutError):
                log.warning("SMPP: enquire_link unanswered; dropping the link")
                if self._writer is not None:
                    self._writer.close()
                return

    # --- wire ---

    def _write(self, pdu: Pdu) -> None:
        if self._writer is None or self._writer.is_closing():
            raise LinkDown("SMPP link is down")
        self._writer.write(pdu.encode())

    async def _request(self, command_id: int, body: bytes) -> Pdu:
        """Send a request PDU and wait for its response (by sequence number)."""
        seq = next(self._seq) & 0x7FFFFFFF or next(self._seq)
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self._pending[seq] = future
        try:
            self._write(Pdu(command_id, 0, seq, body))
            return await asyncio.wait_for(future, self.settings.response_timeout)
        finally:
            self._pending.pop(seq, None)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header = await reader.readexactly(SMPP_HEADER)
                length, command_id, status, seq = struct.unpack(">IIII", header)
                if length < SMPP_HEADER or length > SMPP_MAX_PDU:
                    raise ValueError(f"PDU length {length} out of range")
                body = await reader.readexactly(length - SMPP_HEADER)
                self._dispatch(Pdu(command_id, status, seq, body))
        finally:
            # Whoever waits for an answer (a bind, a submit) learns now, not at its timeout.
            self._drop_link(LinkDown("SMPP link lost"))

    def _dispatch(self, pdu: Pdu) -> None:
        if pdu.command_id & RESPONSE_BIT:
            future = self._pending.get(pdu.sequence)
            if future is not None and not future.done():
                future.set_result(pdu)
            elif pdu.command_id == GENERIC_NACK:
                log.warning("SMPP: generic_nack 0x%02X for seq %d", pdu.status, pdu.sequence)
            return
        if pdu.command_id == ENQUIRE_LINK:
            self._write(Pdu(ENQUIRE_LINK_RESP, ESME_ROK, pdu.sequence))
        elif pdu.command_id == UNBIND:
            self._write(Pdu(UNBIND_RESP, ESME_ROK, pdu.sequence))
            log.info("SMPP: the SMSC unbound us; rebinding")
            if self._writer is not None:
                self._writer.close()
        elif pdu.command_id in (DELIVER_SM, DATA_SM):
            task = asyncio.create_task(self._deliver(pdu))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._write(Pdu(GENERIC_NACK, ESME_RINVCMDID, pdu.sequence))

    # --- inbound ---

    async def _deliver(self, pdu: Pdu) -> None:
        """Hand a deliver_sm to the hub, then answer: OK, or "try again" if the hub failed."""
        resp_id = pdu.command_id | RESPONSE_BIT
        status = ESME_ROK
        try:
            if pdu.command_id == DATA_SM:
                raise ValueError("data_sm is not supported")
            sm = decode_short_message(pdu.body)
            await self._handle_short_message(sm)
        except ValueError as err:
            log.warning("SMPP: unreadable deliver_sm (seq %d): %s", pdu.sequence, err)
        except Exception:
            log.exception("SMPP: the hub could not take deliver_sm seq %d", pdu.sequence)
            status = ESME_RX_T_APPN
        with contextlib.suppress(RetryableError):
            self._write(Pdu(resp_id, status, pdu.sequence, b"\x00"))

    async def _handle_short_message(self, sm: ShortMessage) -> None:
        kind = sm.esm_class & ESM_TYPE_MASK
        udh, payload = split_udh(sm.payload) if sm.esm_class & ESM_UDHI else (b"", sm.payload)
        text = decode_text(payload, sm.data_coding)
        if kind in (ESM_RECEIPT, ESM_INTERMEDIATE) or (
            kind == 0x08 and TLV_RECEIPTED_MESSAGE_ID in sm.tlvs
        ):
            receipt = parse_receipt(text, sm.tlvs)
            report = self._report_for(receipt)
            if report is not None and self.sink is not None:
                await self.sink.on_report(report)
            return
        sender = f"+{sm.source}" if sm.source_ton == 1 and sm.source.isdigit() else sm.source
        concat = concat_of(udh, sm.tlvs)
        if concat is not None:
            ref, total, seq = concat
            key = (sender, ref)
            parts = self._mo_parts.setdefault(key, {})
            parts[seq] = text
            if len(parts) < total:
                return
            del self._mo_parts[key]
            text = "".join(parts[i] for i in sorted(parts))
        if self.sink is None:
            log.warning("SMPP: MO from %s dropped: no sink", sender)
            return
        await self.sink.on_inbound(
            InboundSms(
                gateway=NAME,
                sender=sender,
                recipient=sm.destination,
                text=text,
                gateway_id=None,  # SMPP 3.4 gives MO messages no id
                received_at=datetime.now(UTC),
                raw={"esm_class": sm.esm_class, "data_coding": sm.data_coding},
            )
        )

    def _normalise_id(self, message_id: str) -> str:
        mode = self.settings.receipt_id
        try:
            if mode == "hex_to_dec":
                return str(int(message_id, 16))
            if mode == "dec_to_hex":
                return format(int(message_id), "x")
        except ValueError:
            pass
        return message_id

    def _report_for(self, receipt: Receipt) -> DeliveryReport | None:
        """Our report for a receipt; parts of a long message are folded into one, at the end."""
        message_id = self._normalise_id(receipt.message_id)
        status = SMPP_RECEIPT_STATUS.get(receipt.stat, "sent")
        detail = f"stat:{receipt.stat}" + (f" err:{receipt.err}" if receipt.err else "")
        group = self._multipart.get(message_id)
        if group is not None:
            if status == "sent":
                return None  # an intermediate word on one part says nothing of the whole
            group.outcomes[message_id] = receipt
            if len(group.outcomes) < len(group.part_ids):
                return None
            for part_id in group.part_ids:
                self._multipart.pop(part_id, None)
            worst = next(
                (r for r in group.outcomes.values() if r.stat != "DELIVRD"),
                next(iter(group.outcomes.values())),
            )
            status = SMPP_RECEIPT_STATUS.get(worst.stat, "failed")
            detail = f"stat:{worst.stat}" + (f" err:{worst.err}" if worst.err else "")
            detail += f" ({len(group.part_ids)} parts)"
            message_id = group.main_id
            receipt = worst
        return DeliveryReport(
            gateway=NAME,
            status=cast(ReportStatus, status),
            gateway_id=message_id,
            detail=detail,
            occurred_at=receipt.done,
            raw={"stat": receipt.stat, "err": receipt.err},
        )

    # --- outbound ---

    def _bodies(self, sms: OutgoingSms) -> list[bytes]:
        """One submit_sm body per part."""
        s = self.settings
        encoding = detect_encoding(sms.text)
        coding = DC_UCS2 if encoding == "ucs2" else DC_DEFAULT
        encode: Callable[[str], bytes] = encode_ucs2 if encoding == "ucs2" else encode_gsm7
        sender = sms.sender or s.sender

        def submit(payload: bytes, esm_class: int = 0, tlvs: bytes = b"") -> bytes:
            return encode_submit(
                source=sender,
                destination=sms.to,
                data_coding=coding,
                payload=payload,
                esm_class=esm_class,
                tlvs=tlvs,
            )

        parts = split_parts(sms.text, encoding)
        if len(parts) == 1:
            return [submit(encode(sms.text))]
        if s.concatenation == "payload":
            return [submit(b"", tlvs=tlv(TLV_MESSAGE_PAYLOAD, encode(sms.text)))]
        self._ref = (self._ref + 1) & 0xFF
        ref, total = self._ref, len(parts)
        bodies = []
        for seq, part in enumerate(parts, start=1):
            if s.concatenation == "sar":
                sar = (
                    tlv(TLV_SAR_MSG_REF_NUM, ref.to_bytes(2, "big"))
                    + tlv(TLV_SAR_TOTAL_SEGMENTS, bytes((total,)))
                    + tlv(TLV_SAR_SEGMENT_SEQNUM, bytes((seq,)))
                )
                bodies.append(submit(encode(part), tlvs=sar))
            else:
                udh = bytes((0x05, 0x00, 0x03, ref, total, seq))
                bodies.append(submit(udh + encode(part), esm_class=ESM_UDHI))
        return bodies

    async def _submit(self, body: bytes) -> str:
        """One submit_sm through the window; waits out throttling; returns the SMSC's id."""
        s = self.settings
        loop = asyncio.get_running_loop()
        for attempt in range(s.throttle_retries + 1):
            if not self._bound.is_set():
                try:
                    await asyncio.wait_for(self._bound.wait(), s.send_wait)
                except TimeoutError:
                    raise LinkDown(f"SMPP link to {s.host}:{s.port} is down") from None
            wait = self._resume_at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            async with self._window:
                try:
                    resp = await self._request(SUBMIT_SM, body)
                except TimeoutError:
                    raise RetryableError("SMSC did not answer submit_sm in time") from None
            if resp.status == ESME_ROK:
                return Reader(resp.body).cstring() if resp.body else ""
            if resp.status in THROTTLING:
                pause = s.throttle_backoff * (2**attempt)
                self._resume_at = max(self._resume_at, loop.time() + pause)
                log.info("SMPP: throttled (0x%02X); pausing %.2fs", resp.status, pause)
                continue
            if resp.status in TRANSIENT:
                raise RetryableError(f"SMSC: temporary error 0x{resp.status:02X}")
            raise SmppError(f"SMSC refused submit_sm: status 0x{resp.status:02X}", resp.status)
        raise GatewayThrottled(f"SMSC kept throttling after {s.throttle_retries} retries")

    async def send(self, sms: OutgoingSms) -> str:
        """Submit one SMS (all its parts); returns the SMSC's id of the first part."""
        try:
            bodies = self._bodies(sms)
        except ValueError as err:
            raise PermanentError(f"cannot send over SMPP: {err}") from err
        if len(bodies) == 1:
            return await self._submit(bodies[0])
        ids = list(await asyncio.gather(*(self._submit(b) for b in bodies)))
        group = _Multipart(main_id=ids[0], part_ids=tuple(ids))
        for part_id in ids:
            self._multipart[part_id] = group
        while len(self._multipart) > self.MAX_TRACKED:
            self._multipart.popitem(last=False)
        return ids[0]


def create(ctx: GatewayContext) -> SmppGateway:
    """Factory registered under "smpp"."""
    return SmppGateway(SmppSettings.from_context(ctx), ctx.sink)
