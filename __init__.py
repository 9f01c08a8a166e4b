"""tracklink: video person re-identification from training to multi-camera deployment."""

__version__ = "0.1.0"


class TracklinkError(Exception):
    """An error the user can fix; the CLI prints its message alone, without a traceback."""


__all__ = ["TracklinkError", "__version__"]
