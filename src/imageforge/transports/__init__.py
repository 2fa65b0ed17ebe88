"""Transports: each parses its wire format, calls `ImageService`, and formats the result."""
