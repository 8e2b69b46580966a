"""Wire email: the SMTP sender (hub.parts["email"]) always, the IMAP watcher when enabled."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

from hub.mail.inbound import InboundMail
from hub.runtime import wiring
from hub.services import Hub

log = logging.getLogger(__name__)


@wiring("email")
async def setup(hub: Hub, stack: AsyncExitStack) -> None:
    """Build SmtpSender from [smtp] (checked in the background) and, with [imap] enabled = true,
    start the watcher feeding hub.mail.inbound; both are closed when the hub stops."""
    import connectors.imap
    import connectors.smtp

    smtp = hub.config.smtp
    if smtp.host:
        sender, check = await connectors.smtp.start(smtp)
        stack.push_async_callback(connectors.smtp.stop, sender, check)
        hub.parts["email"] = sender
        log.info("email: sending through %s (pool of %d)", sender.server, smtp.pool_size)
    else:
        log.info("email: sending off ([smtp] host is empty)")

    imap = hub.config.imap
    if not imap.enabled:
        log.info("email: incoming mail off ([imap] enabled = false)")
        return
    settings = connectors.imap.ImapSettings.from_config(imap)
    sink = InboundMail(
        hub.sessions,
        attachments_dir=imap.attachments_dir,
        region=hub.region,
        create_leads=imap.create_leads,
        bus=hub.bus,
    )
    watcher = connectors.imap.start(settings, sink)
    stack.push_async_callback(connectors.imap.stop, watcher)
    hub.parts["email_watcher"] = watcher
    log.info("email: watching %s on %s", ", ".join(settings.mailboxes), settings.server)
