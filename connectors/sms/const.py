"""Constants of the SMS connectors: defaults, status words of each protocol, limits."""

from __future__ import annotations

from typing import Final

# --- Kannel (smsbox HTTP sendsms, get-url MO, dlr-url reports) ---
KANNEL_SENDSMS_URL: Final = "http://127.0.0.1:13013/cgi-bin/sendsms"
# 1 delivered, 2 undelivered, 4 queued on SMSC, 8 SMSC accepted, 16 SMSC rejected: all of them.
KANNEL_DLR_MASK: Final = 31
# Kannel's dlr-url escapes: %d report type, %A the SMSC's answer, %T unix time, %i smsc-id.
KANNEL_DLR_STATUS: Final[dict[int, str]] = {
    1: "delivered",
    2: "failed",
    4: "sent",
    8: "sent",
    16: "failed",
}
# Kannel's %c (coding) of an MO message: 0 GSM 7-bit, 1 8-bit data, 2 UCS-2.
KANNEL_CODING_UCS2: Final = "2"

# --- SMPP 3.4 ---
SMPP_PORT: Final = 2775
SMPP_HEADER: Final = 16
SMPP_MAX_PDU: Final = 64 * 1024  # real PDUs are < 1 KB; bigger is a broken or hostile peer
SMPP_WINDOW: Final = 10  # submit_sm outstanding at once before we wait for answers
SMPP_ENQUIRE_INTERVAL: Final = 30.0
SMPP_RESPONSE_TIMEOUT: Final = 10.0
SMPP_RECONNECT_MIN: Final = 0.5
SMPP_RECONNECT_MAX: Final = 30.0
SMPP_THROTTLE_BACKOFF: Final = 1.0  # first pause after ESME_RTHROTTLED / ESME_RMSGQFUL
SMPP_THROTTLE_RETRIES: Final = 5
# The stat: word of a delivery receipt's text (SMPP 3.4 appendix B) → our status.
SMPP_RECEIPT_STATUS: Final[dict[str, str]] = {
    "DELIVRD": "delivered",
    "EXPIRED": "expired",
    "DELETED": "failed",
    "UNDELIV": "failed",
    "REJECTD": "failed",
    "ACCEPTD": "sent",
    "ENROUTE": "sent",
    "UNKNOWN": "sent",
}

# --- Generic HTTP/JSON gateway ---
HTTP_TIMEOUT: Final = 10.0
HTTP_CONNECTIONS: Final = 16
