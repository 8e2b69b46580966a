"""Constants of the AMI connector: wire format, defaults and limits."""

from __future__ import annotations

from typing import Final

DEFAULT_PORT: Final = 5038

# AMI frames: "Key: Value" lines ended by CRLF; a blank line ends the frame.
EOL: Final = "\r\n"
FRAME_END: Final = b"\r\n\r\n"
KEY_SEP: Final = ": "
BANNER_PREFIX: Final = b"Asterisk Call Manager/"

# A real frame is a few hundred bytes (a Command response can reach some kilobytes). Anything
# larger without a blank line is junk or an attack: it is discarded, never buffered without end.
MAX_FRAME_BYTES: Final = 1 << 20

# Events waiting for a slow sink. About 2 KB each in memory, so the default is ~40 MB at worst.
# When it is full, new events are dropped and a resync (CoreShowChannels) follows once the sink
# has caught up: reading must never stop, or Ping answers would stall behind the events and
# Asterisk itself would drop us (its manager.conf writetimeout).
DEFAULT_EVENT_QUEUE_SIZE: Final = 20_000

# The delivery task yields to the event loop after this many events so that a sink which never
# suspends cannot starve the reader (and with it Ping handling).
DELIVERY_BATCH: Final = 1024

# How long stop() lets the sink drain events already received before it gives up on them.
STOP_DRAIN_TIMEOUT: Final = 5.0
LOGOFF_TIMEOUT: Final = 1.0

# Malformed frames are logged at most this often (seconds), with a count of the suppressed ones.
GARBAGE_LOG_INTERVAL: Final = 10.0

ORIGINATE_ACTION_PREFIX: Final = "commhub-originate-"
# Originates remembered until their OriginateResponse, so that its outcome can be logged.
MAX_TRACKED_ORIGINATES: Final = 1024
