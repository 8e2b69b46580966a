"""The SMS channel's domain: text handling, the gateway registry, sending and receiving."""
