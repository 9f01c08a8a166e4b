"""One writer per camera: who may write it, and when another process may take it over.

A claim names its owner (`host:pid` by default) and carries a heartbeat. A second process that asks for a
claimed camera is refused with the owner's name, unless the owner is gone (a dead pid on this host, or, for
PostgreSQL, a closed server connection: a killed writer's camera resumes at once on rerun) or its heartbeat
is older than the timeout (a writer on another machine that stopped answering).
"""

from __future__ import annotations

import logging
import os
import socket

from tracklink import TracklinkError

log = logging.getLogger(__name__)

# Three heartbeats fit in it (one every timeout / 3), so one slow commit never loses a live writer's camera.
DEFAULT_CLAIM_TIMEOUT_S = 30.0


def default_owner() -> str:
    """This process, as other processes see it: `host:pid`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def local_owner_gone(owner: str) -> bool:
    """True when `owner` ran on this host under a pid that no longer exists (killed, or ended without release)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False


def check_takeover(camera: str, holder: str, age_s: float, timeout_s: float, holder_gone: bool) -> None:
    """Return when `camera` may be taken from `holder`; otherwise raise the error the second writer sees."""
    if holder_gone:
        log.warning("camera %s: its previous writer %s is gone; resuming it here", camera, holder)
        return
    if age_s > timeout_s:
        log.warning("camera %s: its writer %s has sent no heartbeat for %.1f s (timeout %.1f s); taking it over",
                    camera, holder, age_s, timeout_s)
        return
    raise TracklinkError(f"camera {camera!r} is being written by {holder} (last heartbeat {age_s:.0f} s ago); "
                         f"stop that run, or run again once it has been silent for {timeout_s:.0f} s")


def lost_claims_error(cameras: set[str]) -> TracklinkError:
    """What a writer hears when another process took its cameras over: it must not write them any more."""
    names = ", ".join(sorted(cameras))
    return TracklinkError(f"camera {names} was taken over by another process after this one sent no heartbeat "
                          "for longer than the claim timeout; its latest rows were not written")


__all__ = ["DEFAULT_CLAIM_TIMEOUT_S", "check_takeover", "default_owner", "local_owner_gone", "lost_claims_error"]
