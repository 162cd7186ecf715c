"""An ordered, bounded process pool for CPU-bound per-batch work (JSON parsing and printing).

orjson holds the GIL, so threads cannot spread JSON work over cores; worker processes can.
Results come back in submission order, with at most ``window`` batches in flight, so output
order and memory stay as in a single-process run. Workers start through ``forkserver`` (safe
beside the threads pyarrow and the pipeline run) and only once a run has shown it is big
enough to repay their start-up (``WorkerGate``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

#: rows a run handles inline before starting workers (~0.3 s of start-up is not worth it below)
INLINE_ROWS = 16384

#: what to do when a script runs vecferry again in each worker process it starts
MAIN_GUARD = ('a script must call vecferry under if __name__ == "__main__":, '
              'or with workers=1')


def lost_worker_hint(first: str) -> str:
    """``first`` (what to do about a worker process that died), plus the main-guard advice
    when the run came from a user's script rather than vecferry's own command line."""
    import sys

    cli = sys.modules.get("vecferry.cli")
    from_cli = cli is not None and getattr(sys.modules.get("__main__"), "main", None) is \
        getattr(cli, "main", None)
    return first if from_cli else f"{first}; {MAIN_GUARD}"


def refuse_while_bootstrapping(what: str) -> None:
    """Raise ``UsageError`` in a worker process that is still starting up.

    A new worker process imports the calling script again (as multiprocessing does for
    ``forkserver`` and ``spawn``); a call at the script's top level would convert again, write
    outputs, and start workers of its own, before the worker could run its first task.
    """
    from multiprocessing import process

    from vecferry.errors import UsageError

    if getattr(process.current_process(), "_inheriting", False):
        raise UsageError(f"{what} was called while a vecferry worker process was starting, "
                         "which runs the calling script again", hint=MAIN_GUARD)


@contextlib.contextmanager
def _lost_workers() -> Iterator[None]:
    """A pool whose process died (its result is lost, or the pool refuses new work) as
    vecferry's error, with what to do."""
    from concurrent.futures.process import BrokenProcessPool

    from vecferry.errors import VecferryError

    try:
        yield
    except BrokenProcessPool as exc:
        raise VecferryError("a vecferry worker process stopped without finishing its work",
                            hint=lost_worker_hint("a killed process is often out of memory: "
                                                  "check memory limits")) from exc


STDIN_SCRIPT = ("worker processes cannot start from a script read from standard input (each "
                "one runs the calling script again, and there is no file to run)")


def script_rerunnable() -> bool:
    """Whether a worker process can run the calling script again, as multiprocessing's
    ``forkserver`` makes each one do: it can unless ``__main__`` names a file that is not
    there (``python - <<EOF``: ``<stdin>``). Modules (``python -m``), ``python -c`` and
    notebooks have nothing to re-run."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None:
        return True
    path = getattr(main, "__file__", None)
    return path is None or os.path.isfile(path)


def check_workers(workers: int | None) -> None:
    """``UsageError`` when ``workers`` > 1 were asked for and cannot start (see
    ``script_rerunnable``); the default, ``None``, adapts instead (``default_workers``)."""
    if workers is not None and workers > 1 and not script_rerunnable():
        from vecferry.errors import UsageError

        raise UsageError(STDIN_SCRIPT, hint="save the script to a file and run that, or pass "
                                            "workers=1")


def worker_pool(workers: int, preload: list[str]) -> ProcessPoolExecutor:
    """A process pool of vecferry workers: started through ``forkserver`` (safe beside the
    threads pyarrow and the pipeline run), which imports ``vecferry._worker`` and ``preload``
    once, before any worker forks from it."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["vecferry._worker", *preload])
    from vecferry._worker import die_with_run

    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=die_with_run,
                               initargs=(os.getpid(),))


def default_workers() -> int:
    """Worker processes when none are asked for: ``VECFERRY_WORKERS``, else up to 2 (one per
    core), and 1 when worker processes cannot start (``script_rerunnable``)."""
    if not script_rerunnable():
        return 1
    env = os.environ.get("VECFERRY_WORKERS")
    if env:
        return max(1, int(env))
    return max(1, min(2, os.cpu_count() or 1))


class OrderedPool:
    """``submit`` returns the results that are due, in order; ``drain`` the rest."""

    def __init__(self, workers: int, preload: list[str], window: int | None = None):
        self._pool = worker_pool(workers, preload)
        self._pending: deque[Future[Any]] = deque()
        self._window = window or workers + 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> Iterator[Any]:
        with _lost_workers():
            self._pending.append(self._pool.submit(fn, *args))
        while len(self._pending) > self._window:
            with _lost_workers():
                result = self._pending.popleft().result()
            yield result

    def drain(self) -> Iterator[Any]:
        while self._pending:
            with _lost_workers():
                result = self._pending.popleft().result()
            yield result

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for f in self._pending:
                f.cancel()
            self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=cancel)


class WorkerGate:
    """Decides when a run is big enough for workers, and owns the pool once it starts."""

    def __init__(self, workers: int | None, preload: list[str]):
        check_workers(workers)
        self.workers = default_workers() if workers is None else max(1, workers)
        self.preload = preload
        self.rows = 0
        self.pool: OrderedPool | None = None

    def pool_for(self, rows: int) -> OrderedPool | None:
        """The pool once ``INLINE_ROWS`` rows have gone by inline, else None (run inline)."""
        if self.pool is None and self.workers > 1:
            self.rows += rows
            if self.rows > INLINE_ROWS:
                self.pool = OrderedPool(self.workers, self.preload)
        return self.pool

    def close(self, cancel: bool = False) -> None:
        if self.pool is not None:
            self.pool.close(cancel)
            self.pool = None
