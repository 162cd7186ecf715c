"""Shared benchmark plumbing: every measured step runs in its own process.

A fresh process per step makes peak RSS (``ru_maxrss`` from ``wait4``) belong to that step alone,
and keeps one step's page cache and allocator state from flattering the next.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("VECFERRY_BENCH_OUT", ROOT / "bench_out"))
PY = sys.executable


def run_step(name: str, argv: list[str], *, points: int, nbytes: int,
             env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``argv`` as a child process; return wall seconds, points/s, MB/s and peak RSS (MB)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    out, err = proc.stdout.read(), proc.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{name} failed ({code}): {err.decode()[-2000:]}")
    return {
        "step": name,
        "seconds": round(seconds, 3),
        "points_per_s": round(points / seconds),
        "mb_per_s": round(nbytes / seconds / 1e6, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "stdout_tail": out.decode()[-300:],
    }


def vecferry(*args: str) -> list[str]:
    return [PY, "-m", "vecferry", *args, "--quiet", "--overwrite"]


def python_script(code: str) -> list[str]:
    return [PY, "-c", code]


def raw_fsync_script(path: Path, nbytes: int) -> str:
    """A child that writes ``nbytes`` in 16 MB chunks and fsyncs: the disk's own speed."""
    return (
        "import os\n"
        f"chunk = b'\\x01' * (16 << 20); left = {nbytes}\n"
        f"fd = os.open({str(path)!r}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)\n"
        "while left > 0:\n"
        "    n = min(left, len(chunk)); os.write(fd, chunk[:n]); left -= n\n"
        "os.fsync(fd); os.close(fd)\n"
    )


def ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    """How many times faster step ``a`` is than step ``b``."""
    return round(b["seconds"] / a["seconds"], 2)


def report(name: str, rows: list[dict[str, Any]], goals: list[dict[str, Any]]) -> bool:
    """Print a table of steps and goals, write ``bench_out/<name>.json``; True if goals met."""
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"\n== {name}")
    print(f"{'step':44} {'s':>8} {'points/s':>10} {'MB/s':>8} {'RSS MB':>8}")
    for r in rows:
        print(f"{r['step']:44} {r['seconds']:8.2f} {r['points_per_s']:10d} "
              f"{r['mb_per_s']:8.1f} {r['peak_rss_mb']:8.1f}")
    ok = True
    for g in goals:
        mark = "PASS" if g["met"] else "MISS"
        ok &= bool(g["met"])
        print(f"  [{mark}] {g['goal']}: measured {g['measured']}")
    (OUT / f"{name}.json").write_text(json.dumps({"steps": rows, "goals": goals}, indent=2))
    return ok
