"""Tasks for the local pool that fail the way a real worker can: sent to worker processes by
name, so they live in a module of their own."""

from __future__ import annotations

import os
import threading
from typing import Any


def die(job: Any, partition: Any) -> None:
    """The worker process ends at once, as one killed by the kernel for its memory does."""
    os._exit(9)


def disk_full(job: Any, partition: Any) -> Any:
    """The partition's part cannot be written: the disk under the output is full."""
    import errno

    import pyarrow.parquet as pq

    from vecferry.scaleout import run_partition

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "Error writing bytes to file")

    pq.ParquetWriter.write_table = refuse  # this worker process only
    return run_partition(job, partition)


class InterruptAfterPart:
    """A progress bar that is a Ctrl-C in the run's own thread once a part is done (its
    watcher thread moves it as parts end; the run's thread refreshes it when they have)."""

    total: int | None = None
    moved = 0

    def update(self, n: int) -> None:
        self.moved += n
        if n and threading.current_thread() is threading.main_thread():
            raise KeyboardInterrupt

    def refresh(self) -> None:
        if self.moved:
            raise KeyboardInterrupt

    def close(self) -> None:
        pass
