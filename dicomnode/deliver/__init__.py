"""Sending results: the outbox and the C-STORE SCU."""
