"""The block a batch or demo run ends with: what was done, how fast, what went wrong and where the results are.

It goes to stdout whether or not that is a terminal, so a run in a pipe or a log file ends with it too;
`--json` prints the same facts as one JSON object for scripts.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def _fps(summary: dict) -> str:
    fps = summary.get("fps", {}).get("overall")
    return f"{fps:.1f} camera-frames/s" if fps else "n/a"


def _cameras(summary: dict) -> str:
    states = Counter(c["status"] for c in summary["cameras"].values())
    parts = [f"{n} {state}" for state, n in sorted(states.items())]
    return f"{len(summary['cameras'])} ({', '.join(parts)})" if parts else "0"


def _outputs(summary: dict) -> list[str]:
    files = []
    for name, camera in summary["cameras"].items():
        if camera.get("status") in ("done", "skipped"):
            files += [f"{name}.txt", f"{name}.global.txt"]
    files += [Path(v).name for v in summary.get("videos", {}).values()]
    files += ["tracklink.db", "summary.json"]
    lines, line = [], ""
    for f in files:  # wrapped, so a long list stays readable
        if line and len(line) + len(f) > 72:
            lines.append(line)
            line = ""
        line = f"{line}  {f}" if line else f
    return lines + [line]


def format_summary(title: str, summary: dict) -> str:
    errors = summary.get("errors") or {}
    rows = [
        ("cameras", _cameras(summary)),
        ("frames", f"{summary['frames']} ({_fps(summary)})"),
        ("tracklets", str(summary["tracklets"])),
        ("identities", f"{summary['identities']} ({summary.get('cross_camera_identities', 0)} seen by more than "
                       "one camera)"),
        ("errors", "none" if not errors else "; ".join(f"{k}: {v}" for k, v in errors.items())),
    ]
    status = "interrupted" if summary.get("interrupted") else ("finished with errors" if errors else "done")
    wall = f" in {summary['wall_s']:.1f} s" if "wall_s" in summary else ""
    lines = [f"{title}: {status}{wall}"] + [f"  {key:<11} {value}" for key, value in rows]
    outputs = _outputs(summary)
    lines.append(f"  {'results':<11} {summary.get('out', '.')}/")
    lines += [f"  {'':<11}   {line}" for line in outputs]
    return "\n".join(lines)


__all__ = ["format_summary"]
