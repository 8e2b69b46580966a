"""Wiring steps, one module per channel, registered with hub.runtime.wiring."""
