"""Asterisk Manager Interface connector: start/stop for the composition root, and its public names.

`commhub serve` must come up even when Asterisk is down: start() below logs an unreachable
Asterisk at WARNING and returns the connector, which keeps retrying in the background (and logs
each attempt). A refused login is different: it raises AuthError, because the same secret will
never work and the operator has to fix the configuration.
"""

from __future__ import annotations

import logging

from hub.errors import RetryableError
from hub.telephony.ports import PbxEventSink

from .client import AmiConnector, AmiSettings, check
from .errors import LinkLost, OriginateOutcomeUnknown

__all__ = [
    "AmiConnector",
    "AmiSettings",
    "LinkLost",
    "OriginateOutcomeUnknown",
    "check",
    "start",
    "stop",
]

_LOG = logging.getLogger(__name__)


async def start(settings: AmiSettings, sink: PbxEventSink) -> AmiConnector:
    """Start the AMI link; AuthError if the login is refused, otherwise never fails."""
    connector = AmiConnector(settings, sink)
    try:
        await connector.start()
    except RetryableError as err:
        _LOG.warning(
            "Asterisk AMI not available at start (%s): running without telephony events until"
            " the link comes up; retrying in the background",
            err,
        )
    return connector


async def stop(connector: AmiConnector) -> None:
    """Log off and stop the AMI link and its tasks."""
    await connector.stop()
