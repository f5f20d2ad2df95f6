"""The skystream service: sources, sinks, state, metrics and the command line."""

from processors._version import __version__

__all__ = ["__version__"]
