"""Where the recorded AMI traces live, and how a missing third-party trace set is handled."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import SHARED, require_path

# Third-party traces (cacofonisk, MIT) are read in place, never copied into the repository.
SHARED_TRACES = Path(os.environ.get("COMMHUB_SHARED_TRACES", str(SHARED / "traces")))
CACOFONISK = SHARED_TRACES / "cacofonisk"
# Our own Asterisk 22 recordings are project fixtures.
ASTERISK22 = Path(__file__).resolve().parents[2] / "fixtures" / "asterisk22"


def require_cacofonisk() -> Path:
    """The cacofonisk trace directory; skip without it (fail under CI=true)."""
    require_path(CACOFONISK / "expected.json", "cacofonisk traces (set COMMHUB_SHARED)")
    return CACOFONISK
