"""Summaries of py-spy profiles of the server (``--profile DIR``).

py-spy's ``raw`` output is one collapsed stack per line, ``frame;frame;…;leaf count``, with frames
written ``function (path:line)``. ``summarize`` turns it into the share of samples per function:
self (the function was on top: its own code, including C calls it makes) and inclusive (anywhere on
the stack). ``python -m bench.profiling FILE`` prints it.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<path>[^()]*?)(?::(?P<line>\d+))?\)$")


def _name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("path")
    for marker in ("site-packages/", "lib/python3", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "lib/python3":
                path = "stdlib:" + path.split("/", 1)[-1]
    return f"{m.group('func')} ({path})"


def summarize(path: Path | str, top: int = 15) -> dict[str, Any]:
    self_counts: Counter = Counter()
    incl_counts: Counter = Counter()
    total = 0
    for line in Path(path).read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        total += n
        names = [_name(f) for f in frames]
        self_counts[names[-1]] += n
        for name in set(names):
            incl_counts[name] += n

    def share(counter: Counter) -> list[dict[str, Any]]:
        return [{"function": k, "share": round(v / total, 4)} for k, v in counter.most_common(top)] if total else []

    return {"file": str(path), "samples": total, "self": share(self_counts), "inclusive": share(incl_counts)}


def render(summary: dict[str, Any]) -> str:
    lines = [f"{summary['file']}: {summary['samples']} samples"]
    for kind in ("self", "inclusive"):
        lines.append(f"  {kind}:")
        for row in summary[kind]:
            lines.append(f"    {row['share'] * 100:5.1f}%  {row['function']}")
    return "\n".join(lines)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(render(summarize(arg, top=25)))
