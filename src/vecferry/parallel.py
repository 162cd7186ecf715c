"""An ordered, bounded process pool for CPU-bound per-batch work (JSON parsing and printing).

orjson holds the GIL, so threads cannot spread JSON work over cores; worker processes can.
Results come back in submission order, with at most ``window`` batches in flight, so output
order and memory stay as in a single-process run. Workers start through ``forkserver`` (safe
beside the threads pyarrow and the pipeline run) and only once a run has shown it is big
enough to repay their start-up (``WorkerGate``). Workers ignore Ctrl-C, which a terminal sends
to all of a run's processes: an interrupted run kills them itself (``stop_pool``).
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from types import FrameType
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
    outputs, and start workers of its own, before the worker could run its first task. The
    worker leaves a mark for the run (``_guard_mark``), which then stops at once
    (``raise_if_script_reran``) instead of starting new workers that would do the same.
    """
    from multiprocessing import process

    from vecferry.errors import UsageError

    if getattr(process.current_process(), "_inheriting", False):
        with contextlib.suppress(OSError):
            _guard_mark().write_text(what, encoding="utf-8")
        raise UsageError(f"{what} was called while a vecferry worker process was starting, "
                         "which runs the calling script again", hint=MAIN_GUARD)


def _guard_mark() -> Path:
    """Where a starting worker tells its run that it ran the calling script again: a file
    named after the run's multiprocessing authkey, which a worker receives before it imports
    the script (and which no other run has)."""
    import hashlib
    import tempfile
    from multiprocessing import process

    key = hashlib.sha256(bytes(process.current_process().authkey)).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"vecferry-script-rerun-{key}"


def raise_if_script_reran() -> None:
    """``UsageError`` when a worker process of this run was lost because it ran the calling
    script's vecferry call again (``refuse_while_bootstrapping``): running the work again
    would only start more such workers."""
    mark = _guard_mark()
    try:
        what = mark.read_text(encoding="utf-8")
    except OSError:
        return
    mark.unlink(missing_ok=True)
    from vecferry.errors import UsageError

    raise UsageError(f"{what} runs at the calling script's top level, so each vecferry worker "
                     "process ran it again as it started, and the run stopped",
                     hint=MAIN_GUARD)


@contextlib.contextmanager
def _lost_workers() -> Iterator[None]:
    """A pool whose process died (its result is lost, or the pool refuses new work) as
    vecferry's error, with what to do."""
    from vecferry.errors import VecferryError

    try:
        yield
    except BrokenProcessPool as exc:
        raise_if_script_reran()
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
    once, before any worker forks from it. Its workers ignore SIGINT (``_worker.die_with_run``):
    close it with ``close_pool`` (or use it under ``owned_pool``), which kills them when the
    run is interrupted."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["vecferry._worker", *preload])
    # a mark this process left before (a run in it stopped on one) is not this pool's
    _guard_mark().unlink(missing_ok=True)
    _start_forkserver()
    from vecferry._worker import start_worker

    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=start_worker,
                               initargs=(os.getpid(), dict(os.environ)))


def _start_forkserver() -> None:
    """Start the forkserver, if it is not running, with SIGINT blocked.

    Ctrl-C reaches the whole process group: the forkserver, interrupted while importing its
    preload modules, would print a traceback of its own. A started process inherits the mask
    of the thread that starts it; the forkserver ignores SIGINT once its imports are done
    (which drops one held meanwhile), and the workers it forks keep the mask until their
    initializer ignores SIGINT too, so none of them can be interrupted half started. (Any
    other process forked from the same forkserver starts with SIGINT blocked as well.)
    """
    from multiprocessing import forkserver, resource_tracker

    # interrupted halfway, multiprocessing could lose track of a process it started
    with _interrupts_held():
        if not hasattr(signal, "pthread_sigmask"):
            forkserver.ensure_running()
            return
        # the forkserver starts the resource tracker first if it is not running, which
        # unblocks SIGINT after starting it: started beforehand, it leaves the mask alone
        resource_tracker.ensure_running()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            forkserver.ensure_running()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def submit(pool: ProcessPoolExecutor, fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """``pool.submit(fn, *args)``, with the run's SIGINT and SIGTERM handlers (which raise
    ``KeyboardInterrupt``) held off until it returns.

    A submit may start a worker, and waits for the forkserver to fork it (the first one, until
    the forkserver's imports are done). Interrupted there, the run would lose the worker before
    the pool records it: ``stop_pool`` could not kill it, and it would start after the run has
    removed the queues it needs (a traceback) or live on until it sees the run gone.
    """
    with _interrupts_held():
        return pool.submit(fn, *args)


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Run the block with the Python handlers of SIGINT and SIGTERM only noting the signals;
    those noted run, in order, once the handlers are back (the first raising ends it: they
    raise ``KeyboardInterrupt``, as a rule). Handlers are the main thread's: in another thread
    the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: dict[int, Any] = {}
    later: list[Callable[[], None]] = []

    def note(signum: int, frame: FrameType | None) -> None:
        later.append(lambda: held[signum](signum, frame))

    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(signum)
            if callable(handler):  # SIG_IGN and SIG_DFL need nothing from Python
                held[signum] = handler
                _set_handler(signum, note, later)
        yield
    finally:
        for signum, handler in held.items():
            _set_handler(signum, handler, later)
        for run in later:
            run()


def _set_handler(signum: int, handler: Any, later: list[Callable[[], None]]) -> None:
    """``signal.signal(signum, handler)``, whatever comes. Setting a handler first runs those of
    signals just come; one raising leaves the handler unchanged, and its exception goes to
    ``later``, for the caller to raise once every handler is back."""
    for _ in range(10):
        try:
            signal.signal(signum, handler)
            return
        except BaseException as exc:
            later.append(functools.partial(_raise, exc))
    signal.signal(signum, handler)


def _raise(exc: BaseException) -> None:
    raise exc


#: seconds between an ordered pool's checks that its workers live, while it waits for a result
POLL_SECONDS = 0.2

#: seconds ``stop_pool`` waits for killed workers to be reaped
STOP_SECONDS = 5.0


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """End ``pool`` at once: cancel what has not started and kill its worker processes.

    For an interrupted or terminated run. Nothing here waits on the pool's queues or on its
    workers reading them (a worker that died holding a queue's lock leaves the others waiting
    for ever); a task killed midway leaves no finished part, as a killed process does anyway.
    A second Ctrl-C (a terminal's, then ``timeout``'s) is raised once the workers are dead.
    """
    came: KeyboardInterrupt | None = None
    while True:
        stopped = False
        try:
            with _interrupts_held():
                _kill_workers(pool)
                stopped = True
        except KeyboardInterrupt as exc:
            if stopped:  # held until the workers were dead
                raise
            came = exc  # before the hold began: the workers are still to be killed
            continue
        if came is not None:
            raise came
        return


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    processes = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)
    results = getattr(pool, "_result_queue", None)
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.kill()
    # the pool's own thread sees its workers gone, fails their futures and ends
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + STOP_SECONDS
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.join(max(0.0, deadline - time.monotonic()))
    if results is not None:
        # A worker killed while sending a result (a batch: megabytes) leaves half of it in the
        # pipe, and the pool's thread reading it waits for the rest for ever: this process
        # holds the pipe's writing end too. Closed, the read ends, and the thread with it.
        with contextlib.suppress(OSError, AttributeError):
            results._writer.close()
    if manager is not None:
        # Ended before the interpreter's exit, which wakes every pool's thread without the
        # pool's lock: one still closing its wake-up pipe then fails with a traceback.
        manager.join(max(0.0, deadline - time.monotonic()))


def close_pool(pool: ProcessPoolExecutor, cancel: bool = False) -> None:
    """Shut ``pool`` down, waiting for the tasks that run (and, unless ``cancel``, for those
    not started); interrupted while waiting, ``stop_pool`` and re-raise."""
    try:
        pool.shutdown(wait=True, cancel_futures=cancel)
    except BaseException:
        stop_pool(pool)
        raise


@contextlib.contextmanager
def owned_pool(pool: ProcessPoolExecutor) -> Iterator[ProcessPoolExecutor]:
    """``pool``, shut down as the block ends: after its tasks when the block completes; after
    the tasks that run (the rest cancelled) when it raises an error, so their work is kept;
    at once (``stop_pool``) when it is interrupted (``KeyboardInterrupt``, which a SIGTERM
    taken as an interrupt is too, or ``SystemExit``)."""
    try:
        yield pool
    except Exception:
        close_pool(pool, cancel=True)
        raise
    except BaseException:
        stop_pool(pool)
        raise
    close_pool(pool)


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
            self._pending.append(submit(self._pool, fn, *args))
        while len(self._pending) > self._window:
            with _lost_workers():
                result = self._result(self._pending.popleft())
            yield result

    def drain(self) -> Iterator[Any]:
        while self._pending:
            with _lost_workers():
                result = self._result(self._pending.popleft())
            yield result

    def _result(self, future: Future[Any]) -> Any:
        """``future``'s result, or ``BrokenProcessPool`` (the pool stopped) as soon as one of
        the pool's workers is found ended.

        A worker killed while sending its result (SIGTERM to the process group, the kernel
        out of memory) leaves half of it in the pipe: the pool's own thread waits for the rest
        for ever, and never fails the future. This may run in a reader's thread, which the
        run, interrupted in its main thread, waits for (``pipeline.prefetch``).
        """
        while True:
            done, _ = wait([future], timeout=POLL_SECONDS)
            if done:
                return future.result()
            processes = getattr(self._pool, "_processes", None) or {}
            sentinels = [p.sentinel for p in list(processes.values())]
            if sentinels and multiprocessing.connection.wait(sentinels, timeout=0):
                stop_pool(self._pool)
                raise BrokenProcessPool("a worker process ended while results were due")

    def close(self, cancel: bool = False) -> None:
        """Shut the pool down; ``cancel``: the results still due are not wanted, so the workers
        are killed rather than waited for (a reader closed early, a run interrupted)."""
        if cancel and self._pending:
            self._pending.clear()
            stop_pool(self._pool)
        else:
            close_pool(self._pool, cancel)


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
