"""Imported by the forkserver that vecferry's worker processes fork from, before the modules
they run: what is settled here is settled once, for every worker."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from vecferry.stream import skip_pandas_probe

skip_pandas_probe()

#: seconds between a worker's checks that the run that started it is still there
WATCH_SECONDS = 1.0


def die_with_run(run_pid: int) -> None:
    """Worker initializer: end this worker when the run that started it is gone.

    A run killed with SIGKILL cannot stop its workers itself: they would live on, keep writing
    into the target and hold the caller's pipes open. Workers are forked from the forkserver,
    not from the run, so the kernel's parent-death signal (Linux) covers the forkserver going
    away, and a daemon thread checks the run's process every ``WATCH_SECONDS``.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            time.sleep(WATCH_SECONDS)
            try:
                os.kill(run_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # alive, under another user
                pass

    threading.Thread(target=watch, name="vecferry-watch-run", daemon=True).start()
