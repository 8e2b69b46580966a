"""Where the recorded AMI traces live, and how a missing third-party trace set is handled."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import SHARED

# Third-party traces (cacofonisk, MIT) are read in place, never copied into the repository.
SHARED_TRACES = Path(os.environ.get("COMMHUB_SHARED_TRACES", str(SHARED / "traces")))
CACOFONISK = SHARED_TRACES / "cacofonisk"
# Our own Asterisk 22 recordings are project fixtures.
ASTERISK22 = Path(__file__).resolve().parents[2] / "fixtures" / "asterisk22"


def require_cacofonisk() -> Path:
    """The cacofonisk trace directory; skip without it (fail under CI=true)."""
    if (CACOFONISK / "expected.json").is_file():
        return CACOFONISK
    reason = f"cacofonisk traces not found at {CACOFONISK} (set COMMHUB_SHARED_TRACES)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)
