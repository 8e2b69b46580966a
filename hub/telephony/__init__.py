"""Telephony: the call tracker (AMI events to calls) and its ports to the PBX."""
