"""Summarise py-spy raw (collapsed) stacks: the functions with the most samples, by self time
and by inclusive time.

    .venv/bin/python -m bench.run_all --no-ssh --only udp --profile /tmp/prof
    .venv/bin/python -m bench.profile_summary /tmp/prof/udp-tunneld.txt [--top 25]

Each line of py-spy's raw format is `frame;frame;...;frame COUNT`, the innermost frame last.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(.*?) \((.*?)(?::\d+)?\)$")


def _name(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module.py)`; idle frames keep their name."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    return f"{match[1]} ({Path(match[2]).name})"


def summarise(text: str, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match is None:
            continue
        count = int(match[2])
        frames = [_name(f) for f in match[1].split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples"
    out = [f"{total} samples", "", "self %  function"]
    out += [f"{n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    out += ["", "total %  function"]
    out += [f"{n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    for path in args.files:
        print(f"== {path}")
        print(summarise(path.read_text(), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
