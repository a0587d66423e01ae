"""Steps of one mount and its unmount through the whole daemon: the
difference of two storms' step counts, by file and by function (counted by
bench/fsmond_hooks/sitecustomize.py with STEP_COUNT_OUT, which says how).

    .venv/bin/python bench/step_count.py SMALL.tsv MOUNTS LARGE.tsv MOUNTS [--top 40]
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path


def load(path: str) -> collections.Counter[tuple[str, str]]:
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in Path(path).read_text().splitlines():
        n, filename, function = line.split("\t")
        # fsmond's files from the package, the rest from site-packages or the stdlib
        counts[re.sub(r"^.*?/(fsmond|site-packages|lib/python3\.\d+)/", "", filename),
               function] += int(n)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("small")
    ap.add_argument("small_mounts", type=int)
    ap.add_argument("large")
    ap.add_argument("large_mounts", type=int)
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    small, large = load(args.small), load(args.large)
    pairs = args.large_mounts - args.small_mounts
    per = {key: (large[key] - small.get(key, 0)) / pairs for key in large}
    by_file: collections.Counter[str] = collections.Counter()
    for (filename, _), n in per.items():
        by_file[filename] += n
    for filename, n in by_file.most_common(15):
        print(f"{n:8.0f}  {filename}")
    print()
    for (filename, function), n in sorted(per.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"{n:8.0f}  {filename}: {function}")
    print(f"summary: {sum(per.values()):.0f} Python steps a mount and its unmount "
          f"(storms of {args.small_mounts} and {args.large_mounts})")


if __name__ == "__main__":
    main()
