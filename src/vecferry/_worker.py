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


def start_worker(run_pid: int, environment: dict[str, str]) -> None:
    """Worker initializer: ``die_with_run``, and the run's environment as it is now.

    A worker forks from the forkserver, which keeps the environment of the moment it started
    (the first pool of the process): what the caller set since, such as the credentials a
    provider reads from ``AWS_ACCESS_KEY_ID``, was missing in the workers of later runs.
    """
    die_with_run(run_pid)
    for name in set(os.environ) - set(environment):
        del os.environ[name]
    os.environ.update(environment)


def die_with_run(run_pid: int) -> None:
    """Worker initializer: leave interrupts to the run, and end this worker when the run that
    started it is gone.

    Ctrl-C reaches every process of the terminal's process group. A worker must not end on it
    by itself: one interrupted while reading the pool's task queue leaves the queue's lock
    held, or half a message read, and the other workers wait on it for ever (and the run, on
    them, as it exits). So SIGINT is ignored here (it was blocked since the forkserver started,
    see ``parallel._start_forkserver``), and the run, interrupted, kills its workers itself
    (``parallel.stop_pool``). SIGTERM keeps its default action: the pool ends a broken pool's
    workers with it.

    A run killed with SIGKILL cannot stop its workers itself: they would live on, keep writing
    into the target and hold the caller's pipes open. Workers are forked from the forkserver,
    not from the run, so the kernel's parent-death signal (Linux) covers the forkserver going
    away, and a daemon thread checks the run's process every ``WATCH_SECONDS``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # also drops one that came during start-up
    if hasattr(signal, "pthread_sigmask"):
        # ignored from now on; a process this worker starts should not inherit it blocked
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
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
            if _zombie(run_pid):
                os._exit(1)

    threading.Thread(target=watch, name="vecferry-watch-run", daemon=True).start()


def _zombie(pid: int) -> bool:
    """Whether process ``pid`` has ended but not been reaped yet (Linux; False elsewhere).

    A killed run stays a zombie until its caller waits for it, and a zombie still answers
    ``kill(pid, 0)``; a caller reading the run's output pipes to their end before waiting
    (``subprocess.communicate``) would wait for ever on workers holding them open.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    # the state follows the command name, which is in parentheses and may hold any byte
    state = stat[stat.rfind(b")") + 2:][:1]
    return state in (b"Z", b"X")
