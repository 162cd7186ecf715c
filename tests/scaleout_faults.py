"""Tasks for the local pool that fail the way a real worker can: sent to worker processes by
name, so they live in a module of their own."""

from __future__ import annotations

import os
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
