"""Email and SMS as the core sees them: what a sender must do, whatever the gateway."""
