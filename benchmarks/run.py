"""``make bench``: run every ``bench_*.py`` here, each in its own process, and sum up the goals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    only = sys.argv[1:]
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        if only and not any(o in script.stem for o in only):
            continue
        code = subprocess.call([sys.executable, str(script)])
        if code != 0:
            failed.append(script.name)
    if failed:
        print(f"\nbenchmarks with goals missed or errors: {', '.join(failed)}")
        return 1
    print("\nall benchmark goals met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
