"""Constants of the SMTP connector: retry policy, limits and MIME details."""

from __future__ import annotations

from typing import Final

# Attempts per message for 4xx replies and network errors (the first try included). With the
# backoff below the last attempt starts ~3.5 s after the first: long enough for a greylisting
# 451 or a restarting relay, short enough that an agent's click gets an answer.
MAX_ATTEMPTS: Final = 4
BACKOFF_BASE: Final = 0.5
BACKOFF_MAX: Final = 8.0

# A pooled connection idle longer than this is closed and reopened before use: Postfix drops
# idle clients after smtpd_timeout (300 s, less under stress), and a reply to our MAIL FROM
# saying "421 timeout" would cost a retry.
IDLE_REUSE_SECONDS: Final = 60.0

# Enhanced status classes (RFC 3463) at DATA that blame the address rather than the content:
# 5.1.x addressing (no such user, bad domain) and 5.2.1 (mailbox disabled).
ADDRESS_STATUS_PREFIXES: Final = ("5.1.", "5.2.1")

# RFC 5322: a line MUST NOT exceed 998 octets; longer bodies are quoted-printable.
MAX_LINE: Final = 998
# Header lines SHOULD stay within 78 characters; longer ones are folded.
FOLD_AT: Final = 78
