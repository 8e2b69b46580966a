"""commhub: one customer record across phone, email and SMS."""
