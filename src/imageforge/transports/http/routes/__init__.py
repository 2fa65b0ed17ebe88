"""Thin routers: parse, call the service, format."""
