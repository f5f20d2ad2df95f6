"""Sinks make products durable (files) and publish their events."""
