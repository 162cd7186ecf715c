"""``--engine ray``: the partition plan as a Ray Data pipeline.

``PlanDatasource`` makes one read task per partition; its blocks are the partition's batches,
tagged with the partition and the row they start at. ``PartsDatasink`` writes each run of
blocks of one partition as one part through ``scaleout.write_part``, so parts, rejects,
``done/`` records and the driver's assembly are the same as on the local pool, and a task Ray
retries writes the same part names again. Ray schedules, retries and spreads the tasks; on a
cluster every node needs vecferry installed and the staging directory (next to the output) on
a file system all nodes share.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

from vecferry.errors import (
    EngineError,
    Location,
    MissingDependencyError,
    TargetError,
    VecferryError,
)
from vecferry.parallel import lost_worker_hint
from vecferry.plan import Partition
from vecferry.scaleout import MAX_ATTEMPTS, Job, partition_batches, write_part

try:
    import ray
    from ray.data import Datasink, Datasource, ReadTask
    from ray.data.block import BlockMetadata
except ImportError as exc:  # pragma: no cover - the extra is installed for the test suite
    raise MissingDependencyError("--engine ray needs Ray Data, which is not installed",
                                 hint="pip install 'vecferry[ray]'") from exc

PART_COLUMN = "_vecferry_partition"
FIRST_COLUMN = "_vecferry_first_row"
#: Ray Data gathers a read task's tables into blocks of up to its target size (128 MiB by
#: default) before the fused write sees any: a whole partition was read and held in memory,
#: then written. A target of a few batches keeps each task's memory near what a pool
#: worker holds (the tables are chained, not copied).
BLOCK_BYTES = 16 << 20
#: the remote arguments of the run's tasks (read and write alike, so Ray Data still fuses
#: them into one task per partition): a task whose worker died is run again up to
#: ``MAX_ATTEMPTS`` times in all, as on the local pool; Ray Data's default retries it for ever
TASK_ARGS = {"max_retries": MAX_ATTEMPTS - 1}


class PlanDatasource(Datasource):
    """One read task per partition of a plan."""

    def __init__(self, job: Job, partitions: list[Partition]):
        super().__init__()
        self.job = job
        self.partitions = partitions

    def estimate_inmemory_data_size(self) -> int | None:
        sizes = [p.bytes for p in self.partitions]
        return None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[misc]

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        job = self.job

        def task(p: Partition) -> ReadTask:
            def read() -> Iterator[pa.Table]:
                first = 0
                for batch in partition_batches(job, p, job.part_name(p.index)):
                    n = batch.num_rows
                    table = pa.Table.from_batches([batch])
                    table = table.append_column(PART_COLUMN, pa.array([p.index] * n, pa.int32()))
                    table = table.append_column(FIRST_COLUMN, pa.array([first] * n, pa.int64()))
                    first += n
                    yield table

            meta = BlockMetadata(num_rows=p.rows, size_bytes=p.bytes, input_files=None,
                                 exec_stats=None)
            return ReadTask(read, meta)

        return [task(p) for p in self.partitions]


class PartsDatasink(Datasink):
    """Writes the blocks of each partition as its part (see ``scaleout.write_part``)."""

    def __init__(self, job: Job):
        self.job = job

    def write(self, blocks: Iterable[Any], ctx: Any) -> list[dict[str, Any]]:
        job = self.job
        tables = (pa.table(b) if not isinstance(b, pa.Table) else b for b in blocks)
        results = []
        for index, group in itertools.groupby(
                (t for t in tables if t.num_rows),
                key=lambda t: int(t.column(PART_COLUMN)[0].as_py())):
            group = iter(group)
            head = next(group)
            name = job.part_name(index, int(head.column(FIRST_COLUMN)[0].as_py()))

            def batches(head: pa.Table = head, rest: Iterator[pa.Table] = group
                        ) -> Iterator[pa.RecordBatch]:
                for t in itertools.chain([head], rest):
                    t = t.drop_columns([PART_COLUMN, FIRST_COLUMN]).cast(job.schema)
                    yield from t.to_batches()

            results.append(write_part(job, name, batches()))
        return results


def run_ray(job: Job, partitions: list[Partition], *, workers: int,
            address: str | None = None) -> None:
    """Run ``partitions`` on Ray (a local instance with ``workers`` CPUs unless ``address``
    or ``RAY_ADDRESS`` names a cluster). Raises the first task's error after Ray's retries."""
    if not partitions:
        return
    # Ray's driver prints the cluster's error messages ("(raylet) A worker died or was
    # killed ...") on stdout, from a thread of its own, whatever log_to_driver says: stdout
    # holds the run's data and --json report, so they go to stderr, with the messages. Those
    # that come after the run (a retry's, late) go there too (``_raylet_to_stderr``).
    _raylet_to_stderr()
    with contextlib.redirect_stdout(sys.stderr):
        _run_ray(job, partitions, workers=workers, address=address)


def _raylet_to_stderr() -> None:
    """Make the driver print Ray's cluster error messages on stderr from now on.

    Ray (2.x) has no option for it: its error-listener thread hands each message to
    ``ray._private.worker.print_to_stdstream`` as stdout output. Wrapped here, once, to mark
    them as stderr output; where Ray has no such function, nothing changes."""
    from ray._private import worker

    original = getattr(worker, "print_to_stdstream", None)
    if original is None or getattr(original, "_vecferry_stderr", False):
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") == "raylet":
            data = {**data, "is_err": True}
        original(data, ignore_prefix)

    to_stderr._vecferry_stderr = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


def _run_ray(job: Job, partitions: list[Partition], *, workers: int,
             address: str | None) -> None:
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            _connect(address)
        else:
            with _quiet_logger("ray._private.authentication.authentication_token_setup"):
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
    try:
        with _data_context(), _quiet_logger("ray.data"):
            with warnings.catch_warnings():
                # read_datasource names no max_retries of its own, and the write's arguments
                # must equal the read's for Ray Data to fuse the two into one task
                warnings.filterwarnings("ignore", message=".*ray_remote_args. is deprecated")
                dataset = ray.data.read_datasource(PlanDatasource(job, partitions),
                                                   override_num_blocks=len(partitions),
                                                   ray_remote_args=dict(TASK_ARGS))
            dataset.write_datasink(PartsDatasink(job), ray_remote_args=dict(TASK_ARGS))
    except Exception as exc:
        # Ray wraps a task's exception (RayTaskError, UserCodeException): the run reports
        # vecferry's own error, with its location and hint, as the local pool does
        own = _vecferry_error(exc)
        if own is not None:
            raise own from exc
        if _worker_lost(exc):
            raise TargetError(f"a Ray task was lost with its worker process {MAX_ATTEMPTS} "
                              "times", location=Location(job.src),
                              hint=lost_worker_hint(
                                  "check memory limits (a killed process is often out of "
                                  "memory); run again with --resume to keep the parts done")
                              ) from exc
        raise


#: seconds to wait for a Ray cluster's port to answer before calling it unreachable
CONNECT_TIMEOUT = 10.0


def _connect(address: str) -> None:
    """Join the Ray cluster at ``address``; ``EngineError`` naming it when it cannot be reached
    or refuses the driver.

    Ray itself retries an address that refuses connections for many minutes without a word,
    so the port is tried first (``auto`` is left to Ray, which finds it from a local head)."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if address != "auto" and host and port.isdigit():
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
        except OSError as exc:
            raise EngineError(
                f"cannot reach the Ray cluster: {exc.strerror or exc}",
                location=Location(source=address),
                hint="check --ray-address (or RAY_ADDRESS) and that the cluster is up: "
                     "`ray status` on its head node") from exc
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as exc:
        token = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
        raise EngineError(
            "the Ray cluster did not accept this driver", location=Location(source=address),
            hint="check the token: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token "
                 "must hold the cluster's" if token else
                 "a cluster with token authentication (Ray 2.59 and later turn it on for a "
                 "cluster started with `ray start`) needs RAY_AUTH_MODE=token here, and its "
                 "token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token") from exc


@contextlib.contextmanager
def _data_context() -> Iterator[Any]:
    """Ray Data's settings for one run, the caller's own put back afterwards (a library
    caller may run its own datasets in the same process)."""
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars, context.target_max_block_size
    context.enable_progress_bars = False  # vecferry's own bar counts the parts done
    context.target_max_block_size = BLOCK_BYTES
    try:
        yield context
    finally:
        context.enable_progress_bars, context.target_max_block_size = saved


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Holds a Ray logger at ERROR: Ray Data logs each execution at INFO on stderr, and a
    local instance warns of its default token authentication; vecferry's report says what
    happened, and ``--quiet`` means quiet."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _worker_lost(exc: BaseException) -> bool:
    """Whether a chain of wrapped exceptions holds Ray's word that a task's worker died."""
    lost = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)
    return _in_chain(exc, lost) is not None


def _vecferry_error(exc: BaseException) -> VecferryError | None:
    """The ``VecferryError`` a chain of wrapped exceptions started from, if any."""
    return _in_chain(exc, (VecferryError,))


def _in_chain(exc: BaseException, kinds: tuple[type, ...]) -> Any:
    """The first exception of ``kinds`` along ``exc``'s causes, contexts and Ray's ``cause``
    (Ray wraps a task's exception), or None."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kinds):
            return e
        stack += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return None
