"""Single source of the skystream version (read by the build and by provenance cards)."""

__version__ = "0.1.0"
