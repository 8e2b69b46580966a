"""SMS connector errors (subclasses of hub.errors) and the mapping of HTTP/socket failures onto them."""

from __future__ import annotations

from hub.errors import AuthError, CommhubError, PermanentError, RetryableError


class GatewayThrottled(RetryableError):
    """The gateway asked us to slow down (SMPP ESME_RTHROTTLED/ESME_RMSGQFUL, HTTP 429)."""


class LinkDown(RetryableError):
    """The connection to the gateway is down (being re-established)."""


def from_http_status(gateway: str, status: int, body: str) -> CommhubError:
    """An HTTP gateway's refusal as one of our errors: 401/403 auth, 429/5xx retry, 4xx permanent."""
    detail = f"{gateway} answered HTTP {status}: {body.strip()[:200]}"
    if status in (401, 403):
        return AuthError(detail)
    if status == 429:
        return GatewayThrottled(detail)
    if status >= 500 or status in (408, 425):
        return RetryableError(detail)
    return PermanentError(detail)


def unreachable(gateway: str, where: str, err: BaseException) -> RetryableError:
    """A connect/read failure (OSError, timeout, aiohttp.ClientError) that names the peer."""
    detail = str(err) or type(err).__name__
    if isinstance(err, TimeoutError):
        detail = "timed out"
    return RetryableError(f"cannot reach {gateway} at {where}: {detail}")
