"""Pixels: decoding and preprocessing radiographs (shared with training). Pure."""
