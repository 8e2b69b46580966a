"""Constants of the IMAP connector: IDLE renewal, timeouts, backoff and size limits."""

from __future__ import annotations

from typing import Final

# RFC 2177: servers may drop a client idle for 30 minutes, so IDLE is re-issued before that.
# aioimaplib's idle_start can also hang forever on BYE or a dropped link (its issue #110): each
# IDLE cycle is bounded by this and by the connection-lost event.
IDLE_RENEW_SECONDS: Final = 29 * 60.0

# Any one command (LOGIN, SELECT, a FETCH of sizes) that takes longer means a dead link.
COMMAND_TIMEOUT: Final = 30.0
# A body FETCH resets aioimaplib's timer on every chunk; this bounds silence, not size.
FETCH_TIMEOUT: Final = 120.0

RECONNECT_MIN: Final = 1.0
RECONNECT_MAX: Final = 60.0

# Bigger messages are not fetched whole: only their header is, and the hub logs them as such.
MAX_MESSAGE_BYTES: Final = 50 * 1024 * 1024
