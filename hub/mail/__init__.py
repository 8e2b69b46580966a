"""Email in the domain: parse incoming mail, match it to customers and threads, bounces, sending."""
