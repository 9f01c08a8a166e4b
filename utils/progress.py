"""One rule for progress bars in every command: only on a terminal, and never with --no-progress.

A bar redrawn with carriage returns is noise in a log file or a pipe; tqdm's `disable=None` draws only when
its stream is a terminal. Every command ends with a summary that prints either way.
"""

from __future__ import annotations


def bar_disabled(enabled: bool) -> bool | None:
    """tqdm's `disable` for a bar the user asked for (`enabled`): None lets tqdm show it on a terminal only."""
    return None if enabled else True


__all__ = ["bar_disabled"]
