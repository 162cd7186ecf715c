"""Shared benchmark plumbing: every measured step runs in its own process.

A fresh process per step makes the sampled peak memory belong to that step alone, and keeps one
step's allocator state and imports from flattering the next.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("VECFERRY_BENCH_OUT", ROOT / "bench_out"))
PY = sys.executable
# An installed package runs from compiled bytecode; a shell that sets PYTHONDONTWRITEBYTECODE
# would have every step compile the project's modules again (about 0.1 s a process).
_CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_step(name: str, argv: list[str], *, points: int, nbytes: int,
             env: dict[str, str] | None = None, repeat: int = 1,
             before: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run ``argv`` as a child process; return wall seconds, points/s, MB/s and peak RSS (MB).

    Memory is sampled every 20 ms (PSS every 0.5 s): ``peak_rss_mb`` is the main process's
    resident set, ``peak_anon_mb`` the anonymous part of it (the process's own allocations,
    without pages of memory-mapped files, which the kernel can drop at will),
    ``peak_child_rss_mb`` the largest resident set of any one child; ``peak_pss_mb`` is the
    proportional set size summed over the process and all its children (worker processes),
    which counts each shared page once instead of once per process as a sum of RSS would.
    ``ru_maxrss`` from ``wait4`` cannot be used: on Linux a child inherits the parent's
    high-water mark at fork, so it would report the benchmark driver's memory.

    With ``repeat`` > 1 the step runs that many times: seconds are the median run's (the page
    cache and other load move a single run of a few seconds by +-20%), memory the peak over
    all runs. ``before`` runs ahead of each run, untimed (to clear its output, say).
    """
    runs = []
    for _ in range(repeat):
        if before is not None:
            before()
        runs.append(_run_once(name, argv, points=points, nbytes=nbytes, env=env))
    runs.sort(key=lambda r: r["seconds"])
    row = dict(runs[len(runs) // 2])  # its "cores" too
    for key in ("peak_rss_mb", "peak_anon_mb", "peak_pss_mb", "peak_child_rss_mb"):
        row[key] = max(r[key] for r in runs)
    if repeat > 1:
        row["runs_seconds"] = [r["seconds"] for r in runs]
    return row


def _anon_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def _run_once(name: str, argv: list[str], *, points: int, nbytes: int,
              env: dict[str, str] | None) -> dict[str, Any]:
    import psutil

    # Files, not pipes: a chatty child would block on a full pipe while we only poll.
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out_f, stderr=err_f,
                                env={**_CHILD_ENV, **(env or {})})
        ps = psutil.Process(proc.pid)
        peak = peak_anon = peak_pss = peak_child = 0
        cpu: dict[int, float] = {}  # CPU seconds of each process of the tree, last sample
        children: list[Any] = []
        tick = 0
        while proc.poll() is None:
            # The sampling must not take the CPU it measures: RSS, RssAnon and CPU times cost
            # ~0.02 ms a process, but the process list ~1 ms and PSS (smaps_rollup) ~5 ms a
            # process, which every 20 ms for five processes kept a whole core busy and slowed
            # a two-worker step by a quarter. Those two are sampled less often.
            try:
                peak = max(peak, ps.memory_info().rss)
                peak_anon = max(peak_anon, _anon_bytes(proc.pid))
                if tick % 5 == 0:
                    children = ps.children(recursive=True)
                procs = [ps, *children]
                for p in procs:
                    try:
                        t = p.cpu_times()
                        cpu[p.pid] = t.user + t.system
                        if p is not ps:
                            peak_child = max(peak_child, p.memory_info().rss)
                    except psutil.Error:
                        pass  # a worker ended since the process list was taken
                if tick % 25 == 0:
                    peak_pss = max(peak_pss, sum(p.memory_full_info().pss for p in procs))
            except (psutil.Error, OSError):
                pass  # a process ended between poll() and the sample
            tick += 1
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return {
        "step": name,
        "seconds": round(seconds, 3),
        "points_per_s": round(points / seconds),
        "mb_per_s": round(nbytes / seconds / 1e6, 1),
        "peak_rss_mb": round(peak / 2**20, 1),
        "peak_anon_mb": round(peak_anon / 2**20, 1),
        "peak_pss_mb": round(peak_pss / 2**20, 1),
        # the largest resident set of any one child (a worker of a partitioned run)
        "peak_child_rss_mb": round(peak_child / 2**20, 1),
        # CPU seconds of all its processes over wall seconds (to the last 20 ms sample)
        "cores": round(sum(cpu.values()) / seconds, 2),
        "stdout_tail": out.decode()[-300:],
    }


def warm(*paths: Path) -> None:
    """Read ``paths`` (files, or every file under a directory) once, so the step after starts
    with them in the page cache."""
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            with open(file, "rb") as fh:
                while fh.read(64 << 20):
                    pass


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
    print(f"{'step':52} {'s':>7} {'points/s':>9} {'MB/s':>7} {'RSS MB':>7} {'anon MB':>7} "
          f"{'PSS MB':>7} {'cores':>5}  runs (s)")
    for r in rows:
        runs = " ".join(f"{x:.2f}" for x in r.get("runs_seconds", []))
        print(f"{r['step']:52} {r['seconds']:7.2f} {r['points_per_s']:9d} "
              f"{r['mb_per_s']:7.1f} {r['peak_rss_mb']:7.1f} {r.get('peak_anon_mb', 0):7.1f} "
              f"{r.get('peak_pss_mb', 0):7.1f} {r.get('cores', 0):5.2f}  {runs}")
    ok = True
    for g in goals:
        mark = "PASS" if g["met"] else "MISS"
        ok &= bool(g["met"])
        print(f"  [{mark}] {g['goal']}: measured {g['measured']}")
    (OUT / f"{name}.json").write_text(json.dumps({"steps": rows, "goals": goals}, indent=2))
    return ok
