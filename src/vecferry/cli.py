"""The ``vecferry`` command line: the only place that prints, and that turns errors into exit codes.

Exit codes: 0 done; 1 failed (bad input, target refused, ...); 2 usage error (bad option, unknown
format, output exists); 3 done, but some records were rejected (see the rejects file);
4 verification found differences; 130 interrupted.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTS, EXIT_VERIFY, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
#: 128 + SIGTERM, as a shell reports a process the signal ended
EXIT_TERMINATED = 143


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, systemd, Kubernetes, ``docker stop``) taken as Ctrl-C is: the run
    stops the same way, removing unfinished files and restoring a collection's indexing."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated


def _take_sigterm() -> None:
    """Handle SIGTERM as an interrupt, unless the process already handles it otherwise (an
    application embedding the CLI) or this is not the main thread (signals go there only)."""
    import signal
    import threading

    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL):
        signal.signal(signal.SIGTERM, _on_sigterm)


#: the handlers ``_outcome_decided`` set aside, by signal, for ``_give_back_interrupts``
_SET_ASIDE: dict[int, Any] = {}


def _outcome_decided() -> None:
    """Ignore SIGINT and SIGTERM from here to the exit: the command's outcome is decided (its
    output complete and in place, or its failure or interrupt being reported), so nothing is
    left that an interrupt could stop or clean up. Taken now, one would only misreport the
    run (exit 130 and "was not written" for a complete output), cut its report or ``--json``
    document short, or, once Python's exit has given the signals their default actions
    back, end the process silently with 130. Ignored, not held: only an ignored signal stays
    so through the interpreter's exit. ``_Cli.main`` gives the handlers back when the command
    line ran inside another program (``_give_back_interrupts``)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for signum, ours in ((signal.SIGINT, signal.default_int_handler),
                         (signal.SIGTERM, _on_sigterm)):
        if signum in _SET_ASIDE or signal.getsignal(signum) is not ours:
            continue  # set aside already, or a handler of the embedding program's own
        for _ in range(10):
            try:
                _SET_ASIDE[signum] = signal.signal(signum, signal.SIG_IGN)
                break
            except KeyboardInterrupt:
                # one come just now (setting a handler runs those of signals pending): the
                # outcome stands all the same
                continue


def _give_back_interrupts() -> None:
    """Put back the handlers ``_outcome_decided`` set aside."""
    import signal

    while _SET_ASIDE:
        signum, handler = _SET_ASIDE.popitem()
        signal.signal(signum, handler)


def _release_sigterm() -> None:
    """Give SIGTERM its default action back once the command is over: raised during the
    interpreter's exit (multiprocessing's exit handlers), ``_Terminated`` is only an "Exception
    ignored" traceback; there is nothing left to clean up that the default would skip."""
    import signal
    import threading

    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is _on_sigterm):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

#: CLI option -> (stream side, formats that take it); the value goes to that reader / writer
ROUTES: dict[str, tuple[tuple[str, ...],
                        tuple[str, ...] | dict[str, tuple[str, ...]] | None]] = {
    "ids": (("reader",), None),
    "payloads": (("reader",), None),
    "id_kind": (("reader",), None),
    "allow_lossy": (("reader", "writer"), ("faiss",)),
    "index_factory": (("writer",), None),
    "vector": (("writer",), ("faiss",)),
    "train_rows": (("writer",), ("faiss",)),
    "mmap": (("reader",), ("faiss",)),
    "api_key_env": (("reader", "writer"), ("qdrant", "qdrant-edge")),
    # the target's key, over --api-key-env (two servers, two keys: neither sees the other's)
    "dst_api_key_env": (("writer",), ("qdrant", "qdrant-edge")),
    "timeout": (("reader", "writer"), ("qdrant", "qdrant-edge")),
    "id_field": (("reader", "writer"), ("qdrant", "qdrant-edge")),
    "page_size": (("reader",), None),
    "filter": (("reader",), None),
    "mode": (("writer",), None),
    "parallel": (("writer",), None),
    "max_retries": (("reader", "writer"), ("qdrant", "qdrant-edge")),
    # a FAISS source's inner-product index is Dot or Cosine: --distance says which
    "distance": (("reader", "writer"), {"reader": ("faiss",)}),
    "bulk": (("writer",), None),
    "collection_config": (("writer",), None),
    "shard_key": (("writer",), None),
    "batch_bytes": (("writer",), None),
    "workers": (("reader", "writer"), ("jsonl",)),
    "id_column": (("reader",), ("parquet",)),
    "vector_column": (("reader",), ("parquet",)),
    "sparse_column": (("reader",), ("parquet",)),
    "payload_columns": (("reader",), ("parquet",)),
    "payload_column": (("reader",), ("parquet",)),
    "json_columns": (("reader",), ("parquet",)),
    "id_key": (("reader",), ("jsonl",)),
    "vector_key": (("reader",), ("jsonl",)),
    "sparse_key": (("reader",), ("jsonl",)),
    "payload_key": (("reader",), ("jsonl",)),
    "vdf_index": (("reader", "writer"), ("vdf",)),
    "max_part_size": (("writer",), ("parquet", "jsonl")),
    "part_compression": (("writer",), ("jsonl",)),
    # the snapshot reader's option ``collection``: a Qdrant collection is named in its location
    "snapshot_collection": (("reader",), ("snapshot",)),
}


def _err(message: str) -> None:
    click.echo(message, err=True)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _route(options: dict[str, Any], src_fmt: str, dst_fmt: str
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split CLI options into reader and writer keyword arguments (unset ones are dropped)."""
    reader: dict[str, Any] = {}
    writer: dict[str, Any] = {}
    for key, value in options.items():
        if value is None or value == ():  # not given (flags default to None, repeatable ones
            continue                    # to ())
        sides, formats = ROUTES[key]
        for side, fmt, target in (("reader", src_fmt, reader), ("writer", dst_fmt, writer)):
            allowed = formats.get(side) if isinstance(formats, dict) else formats
            if side in sides and (allowed is None or fmt in allowed):
                target[key] = value
    if "dst_api_key_env" in writer:
        writer["api_key_env"] = writer.pop("dst_api_key_env")
    if "snapshot_collection" in reader:
        reader["collection"] = reader.pop("snapshot_collection")
    return reader, writer


def _as_shown(exc: Any) -> Any:
    """A library error as the command line shows it: options named by the flags the user
    typed (``--collection-config``), not by their keyword names, and a bad record that
    stopped the run saying how to go on past it when its error names nothing better."""
    from vecferry.errors import RecordError, UnknownOptionsError

    # the library names no command-line flag; a hint that names one already is left alone
    skip = ("pass --on-error skip to go on past such records: convert and copy set them aside "
            "in a rejects file")
    if isinstance(exc, RecordError) and exc.hint is None:
        exc.hint = f"fix the record, or {skip}"
    elif isinstance(exc, RecordError) and "--on-error skip" not in exc.hint:
        exc.hint = f"{exc.hint}; or {skip}"
    return exc.as_flags() if isinstance(exc, UnknownOptionsError) else exc


#: what an interrupted command left, by what it does (``_run``'s ``left``)
LEFT_NOTHING = "nothing was written"
#: what is said of a conversion's output that is complete when its ``--verify`` was cut short
VERIFY_CUT = "the verification did not finish (run `vecferry verify` to compare)"
LEFT_SNAPSHOT = ("a snapshot download keeps its partial file and resumes when run again; an "
                 "upload or a recovery the server had begun goes on there")
#: ``snapshot copy`` stopped before it made a snapshot; once it has made one, the library's
#: notice says what it left (the snapshot deleted or kept, its download, a recovery going on)
LEFT_COPY = "nothing was copied: the copy stopped before it made a snapshot"


#: what an interrupted command left, worked out once it has stopped: the sentence shown and,
#: for ``--json``, the facts it rests on
Left = Callable[[str | None], tuple[str, dict[str, Any]]]

def _saved_state(path: Path, dst: str) -> dict[str, Any] | None:
    """The resume state at ``path`` when it is one of a load into ``dst`` (else None)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("dst") != dst:
        return None
    return state


def _left_by_convert(dst: str, kw: dict[str, Any], command: str) -> Left:
    """What an interrupted ``convert`` or ``copy`` into ``dst`` left, looked at after the
    run's own cleanup: a file output is not written (a partitioned run's finished parts are
    kept); a collection keeps what it acknowledged, which its state file counts. An output
    the run had completed (its notice says it ``OUTPUT_WHOLE``, or a move into place was
    finished) is said to be whole, whatever its kind."""
    resume, state = bool(kw.get("resume")), kw.get("state")

    def left(notice: str | None) -> tuple[str, dict[str, Any]]:
        from vecferry.converters import resolve
        from vecferry.converters.qdrant import server_root
        from vecferry.pipeline import OUTPUT_WHOLE, default_state_path
        from vecferry.scaleout import staging_dir
        from vecferry.storage import MOVE_FINISHED

        # stopped once the output was in place, whole (the library's notice says so: a move
        # into place the cleanup finished, or a run stopped after its writer closed), or
        # during the verification of a complete output
        whole = bool(notice) and (MOVE_FINISHED in notice or OUTPUT_WHOLE in notice)
        if not resolve(dst, kw.get("to_format"), role="writer").name.startswith("qdrant"):
            if whole:
                return notice, {"complete": True}
            parts = staging_dir(dst)
            if parts.is_dir():
                return (f"{dst} was not written (an output appears only when complete); its "
                        f"finished parts are kept in {parts} for the same command with "
                        "--resume", {"parts": str(parts)})
            return f"{dst} was not written (an output appears only when complete)", {}
        if server_root(dst):
            # a copy of every collection: one state per collection, in the working directory
            return (f"the collections copied to {dst} so far are kept, and the one being "
                    "copied keeps the points it acknowledged; run the same command with "
                    "--resume to go on", {})
        path = Path(state or default_state_path(dst))
        # without --resume or --state a load records no position (none to read)
        saved = _saved_state(path, dst) if resume or state else None
        if saved is not None:
            written, position = int(saved.get("written", 0)), int(saved.get("position", 0))
            facts = {"acknowledged": {"state_file": str(path), "position": position,
                                      "written": written, "done": bool(saved.get("done"))}}
            if saved.get("done"):
                after = (f"; {VERIFY_CUT}" if command == "copy"
                         or (notice is not None and VERIFY_CUT in notice) else "")
                return (f"{dst} holds the whole load: {path} marks it done ({written} point(s) "
                        "written), so the same command with --resume sends nothing again"
                        + after, {**facts, **({"complete": True} if whole else {})})
            if whole:
                return notice, {**facts, "complete": True}
            return (f"{dst} keeps the {written} point(s) acknowledged so far ({path} records "
                    f"source position {position}); run the same command with --resume to "
                    "send only the rest", facts)
        if whole:
            return notice, {"complete": True}
        parts = staging_dir(dst)
        if parts.is_dir():
            return (f"{dst} keeps the points of the partitions it acknowledged ({parts} "
                    "records them); run the same command with --resume to skip the "
                    "partitions done", {"parts": str(parts)})
        if resume or state:
            return (f"{dst} acknowledged no batch yet (no state was saved in {path}); run "
                    "the same command again", {"acknowledged": {
                        "state_file": str(path), "position": 0, "written": 0, "done": False}})
        return (f"{dst} keeps the points it acknowledged, but a run without --resume records "
                "no position: the same command run again sends every point again (upserted "
                "by id, so none is doubled); pass --resume to continue where a run stops", {})

    return left


def _left_by_verify(diff_file: str | None) -> Left:
    """What an interrupted ``verify`` left: nothing, or a diff file cut short."""

    def left(notice: str | None) -> tuple[str, dict[str, Any]]:
        if diff_file and Path(diff_file).is_file():
            return (f"the comparison did not finish; {diff_file} holds only the differences "
                    "found before it stopped", {"diff_file": diff_file})
        return LEFT_NOTHING, {}

    return left


def _run(fn: Callable[[], int | None], as_json: bool, left: str | Left = LEFT_NOTHING
         ) -> None:
    """Run a command body, mapping vecferry errors to messages and exit codes; ``left`` says
    what an interrupt leaves behind (``LEFT_NOTHING``, ``LEFT_SNAPSHOT``, or a ``Left`` such
    as ``_left_by_convert``'s, asked once the run has stopped)."""
    from vecferry.errors import VecferryError

    try:
        code = fn() or EXIT_OK
        _outcome_decided()
    except VecferryError as err:
        _outcome_decided()
        exc = _as_shown(err)
        if as_json:
            _emit_json({"ok": False, **exc.as_dict()})
        for w in getattr(exc, "warnings", None) or []:
            _err(f"warning: {w}")
        _err(f"error: {exc}")
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        # the reader of stdout left (`vecferry inspect ... | head`): nothing to tell it, and
        # Python's own flush at exit must not fail on the closed pipe again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_FAILED)
    except OSError as exc:
        _outcome_decided()
        # vecferry names the file it was writing (TargetError); whatever the system refused
        # elsewhere still gets a message, not a traceback
        if as_json:
            _emit_json({"ok": False, "error": type(exc).__name__, "message": str(exc)})
        _err(f"error: {exc}")
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt as exc:
        _outcome_decided()  # a second Ctrl-C does not cut short what the first one left
        how = "terminated" if isinstance(exc, _Terminated) else "interrupted"
        notice = exc.args[0] if exc.args and isinstance(exc.args[0], str) else None
        try:
            text, facts = left(notice) if callable(left) else (left, {})
        except Exception:  # a look that fails must not hide the interrupt
            text, facts = "the run stopped before it finished", {}
        if as_json:
            # a script reading stdout gets one document whatever ended the run
            _emit_json({"ok": False, "error": how.capitalize(),
                        "signal": "SIGTERM" if isinstance(exc, _Terminated) else "SIGINT",
                        "message": f"{how}: {text}", **facts,
                        **({"notice": notice} if notice else {})})
        _err(f"{how}: {text}")
        if notice and notice not in text and not facts.get("complete"):
            _err(f"warning: {notice}")  # what the run left that needs the user
        sys.exit(EXIT_TERMINATED if isinstance(exc, _Terminated) else EXIT_INTERRUPTED)
    sys.exit(code)


def _interrupts_held() -> Any:
    """``parallel._interrupts_held``, imported when a command needs it."""
    from vecferry.parallel import _interrupts_held as held

    return held()


def _progress(quiet: bool, desc: str):
    from tqdm import tqdm

    # disable=None turns the bar off when stderr is not a terminal (logs stay clean)
    return tqdm(desc=desc, unit="pt", unit_scale=True, file=sys.stderr, dynamic_ncols=True,
                disable=True if quiet else None, smoothing=0.1)


def _print_report(report: dict[str, Any], quiet: bool) -> None:
    for w in report.get("warnings", []):
        _err(f"warning: {w}")
    if quiet:
        return
    rate = report.get("points_per_second")
    line = (f"{report['written']} points {report['from']} -> {report['to']} "
            f"in {report['seconds']:.2f} s")
    if rate:
        line += f" ({rate:,.0f} points/s)"
    _err(f"{line}: {report['destination']}")
    if report.get("partitions"):
        _err(f"{report['partitions']} partitions on {report['workers']} {report['engine']} "
             "worker(s)" + (f", {report['retried_partitions']} run again after their process "
                            "was lost" if report.get("retried_partitions") else ""))
    if report.get("resumed_partitions"):
        _err(f"resumed: {report['resumed_partitions']} partitions were done by an earlier run")
    if report.get("resumed_from"):
        _err(f"resumed after {report['resumed_from']} points written by an earlier run")
    if report.get("rejected"):
        _err(f"{report['rejected']} record(s) rejected: {report['rejects_file']} (fix them and "
             "convert that file again)")


# ------------------------------------------------------------------------------------ options


def _with_options(f: Callable, options: list[Callable]) -> Callable:
    """``f`` decorated with click ``options``, listed in the order ``--help`` shows them."""
    for option in reversed(options):
        f = option(f)
    return f


#: how a source is read: shared by convert, copy, verify and inspect
_MAPPING_OPTIONS = [
    click.option("--id-kind", type=click.Choice(["int", "uuid", "string", "mixed"]),
                 help="JSONL, mapped Parquet, VDF: id kind when the first points do not "
                 "show it."),
    click.option("--id-column", metavar="NAME", help="Parquet not written by vecferry: "
                 "the id column (default: row numbers)."),
    click.option("--vector-column", multiple=True, metavar="[NAME=]COLUMN",
                 help="Parquet not written by vecferry: a vector column (lists of numbers "
                 "or float32 bytes); repeat for named vectors."),
    click.option("--sparse-column", multiple=True, metavar="NAME=COLUMN",
                 help="Parquet not written by vecferry: a sparse vector column "
                 "(struct of indices and values)."),
    click.option("--payload-columns", metavar="A,B,C", help="Parquet not written by "
                 "vecferry: payload columns (default: every other column)."),
    click.option("--payload-column", metavar="COLUMN", help="Parquet not written by "
                 "vecferry: a column of objects (struct, map or JSON text) that is the "
                 "payload itself, not a key of it."),
    click.option("--json-columns", metavar="A,B", help="Parquet not written by vecferry: "
                 "string columns holding JSON, parsed into the payload."),
    click.option("--id-key", metavar="KEY", help="JSONL of other tools: the id key "
                 "(default: record numbers)."),
    click.option("--vector-key", multiple=True, metavar="[NAME=]KEY",
                 help="JSONL of other tools: a vector key; repeat for named vectors."),
    click.option("--sparse-key", multiple=True, metavar="NAME=KEY",
                 help="JSONL of other tools: a sparse vector key ({indices, values})."),
    click.option("--payload-key", metavar="KEY", help="JSONL of other tools: the key "
                 "holding the payload object (default: every other key)."),
    click.option("--vdf-index", metavar="NAME[/NAMESPACE]", help="VDF: the index (and "
                 "namespace) to read, or the index name to write."),
    click.option("--allow-lossy", is_flag=True, default=None,
                 help="FAISS: read lossy codes (PQ, SQ, ...) as decoded approximations, or "
                 "write a lossy --index-factory."),
    click.option("--snapshot-collection", metavar="NAME", help="Qdrant snapshot file: the "
                 "collection to read from a full-instance snapshot that holds several."),
]


def _source_reading(f: Callable) -> Callable:
    return _with_options(f, _MAPPING_OPTIONS)


def _common_convert_options(f: Callable) -> Callable:
    decorators = [
        click.option("--from", "from_format", metavar="FORMAT", help="Source format "
                     "(default: from the URI scheme or extension)."),
        click.option("--to", "to_format", metavar="FORMAT", help="Target format."),
        click.option("--batch-size", type=click.IntRange(min=1), default=2048, show_default=True,
                     help="Points per batch; memory is bounded by this."),
        click.option("--limit", type=click.IntRange(min=0), help="Stop after N points."),
        click.option("--overwrite", is_flag=True, help="Replace an existing output."),
        click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail",
                     show_default=True, help="On a bad record: stop, or write it to the "
                     "rejects file and carry on."),
        click.option("--rejects", metavar="FILE", help="Rejects file (default "
                     "<output>.rejects.jsonl)."),
        click.option("--resume", is_flag=True, help="Continue an interrupted run: a Qdrant "
                     "target after the last acknowledged batch saved in the state file, a "
                     "partitioned run with the partitions it finished; starts fresh if none."),
        click.option("--state", metavar="FILE", help="Resume state file (default "
                     "<output>.vecferry-state.json)."),
        click.option("--no-duplicate-check", is_flag=True, help="Skip counting repeated ids "
                     "(and, partitioned into a collection, sending their last records again)."),
        click.option("--ids", metavar="FILE", help="numpy: ids .npy aligned with the matrix."),
        click.option("--payloads", metavar="FILE", help="numpy: payloads aligned by row (JSONL "
                     "or Parquet); FAISS: payloads joined by id (a JSON object keyed by id, "
                     "JSONL or Parquet with an 'id')."),
        *_MAPPING_OPTIONS,
        click.option("--index-factory", metavar="SPEC", help="FAISS: index to build, e.g. "
                     "'IDMap2,Flat' or 'IVF256,Flat'."),
        click.option("--vector", metavar="NAME", help="FAISS target: the dense vector to index "
                     "when points have several."),
        click.option("--train-rows", type=click.IntRange(min=1), help="FAISS target: rows "
                     "sampled to train an index that needs training."),
        click.option("--no-mmap", "mmap", flag_value=False, default=None, help="FAISS: read "
                     "the index into memory instead of memory-mapping it."),
        click.option("--api-key-env", metavar="NAME", help="Qdrant: environment variable "
                     "holding the API key (default QDRANT_API_KEY)."),
        click.option("--dst-api-key-env", metavar="NAME", help="Qdrant: variable holding "
                     "the target's API key, when it differs from the source's (default: the "
                     "same as the source's)."),
        click.option("--timeout", type=float, metavar="SECONDS", help="Qdrant: request "
                     "timeout."),
        click.option("--page-size", type=click.IntRange(min=1), help="Qdrant: scroll page size."),
        click.option("--filter", "filter", metavar="JSON", help="Qdrant: export only points "
                     "matching this filter."),
        click.option("--id-field", metavar="NAME", help="Qdrant: payload field keeping "
                     "original ids that are not unsigned ints or UUIDs."),
        click.option("--mode", type=click.Choice(["append", "overwrite", "fail-if-exists"]),
                     help="Qdrant: what to do with an existing collection (default append)."),
        click.option("--parallel", type=click.IntRange(min=1), help="Qdrant: requests in "
                     "flight."),
        click.option("--max-retries", type=click.IntRange(min=0), help="Qdrant: retries of a "
                     "transient failure."),
        click.option("--bulk", is_flag=True, default=None,
                     help="Qdrant: index after the load, not during."),
        click.option("--collection-config", metavar="JSON", help="Qdrant: settings for a "
                     "collection vecferry creates, over the source's (a JSON object, or @FILE): "
                     "shard_number, replication_factor, hnsw_config, quantization_config, "
                     "on_disk_payload, payload_schema, aliases, ...; per vector on_disk, "
                     "hnsw_config, quantization_config; null drops a setting."),
        click.option("--shard-key", metavar="KEY", help="Qdrant server: write every point to "
                     "this shard key of a collection with custom sharding (created with it "
                     "when missing); 7 is an integer key, '\"7\"' a text one."),
        click.option("--distance", type=click.Choice(["Cosine", "Euclid", "Dot", "Manhattan"]),
                     help="Distance for vectors whose source records none: a Qdrant or FAISS "
                     "target is created with it, a file target keeps it in its manifest; for "
                     "a FAISS source with an inner-product index, Dot or Cosine (else decided "
                     "by the vectors' lengths)."),
        click.option("--batch-bytes", type=click.IntRange(min=1024), help="Qdrant: request "
                     "size limit in bytes."),
        click.option("--workers", type=click.IntRange(min=1), help="Processes (default: the "
                     "cores there are; env VECFERRY_WORKERS). A source that cuts into several "
                     "partitions is converted on this many processes; a numpy, FAISS, single "
                     "Parquet file or embedded Qdrant target only when given. Otherwise: JSON "
                     "parsing and printing processes."),
        click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
                     show_default=True, help="Run the partitions on a local process pool or "
                     "as a Ray Data pipeline (extra: ray)."),
        click.option("--ray-address", metavar="ADDR", help="Ray cluster to run on (default: "
                     "RAY_ADDRESS, else a local Ray)."),
        click.option("--partition-size", metavar="SIZE", help="Bytes of source a partition "
                     "aims at (default 64MB; 512MB, 1GiB, bytes)."),
        click.option("--max-part-size", metavar="SIZE", help="Parquet / JSONL directory "
                     "target (location ending in /): start a new part-NNNNN file before a part "
                     "would pass SIZE bytes of the part file (compressed bytes with "
                     "--jsonl-compression gzip/zstd) (512MB, 1GiB, bytes; binary multiples); "
                     "one _manifest.json for all parts."),
        click.option("--jsonl-compression", "part_compression",
                     type=click.Choice(["none", "gzip", "zstd"]), help="JSONL directory target: "
                     "compression of the parts (default none; a file's extension picks its "
                     "own)."),
        click.option("--verify", "verify_after", is_flag=True, help="Verify the output against "
                     "the source when done (counts, digests, per-id diff, search parity)."),
        click.option("--dry-run", is_flag=True, help="Open SRC and DST and run every check "
                     "made before the first write, say what would be done (points; a "
                     "collection created, with its config, or appended to), write nothing."),
        _STORAGE_OPTION,
        click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary."),
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on "
                     "stdout."),
    ]
    return _with_options(f, decorators)


_STORAGE_OPTION = click.option(
    "--storage-option", "storage_option", multiple=True, metavar="KEY=VALUE",
    help="s3:// gs:// az:// locations: an fsspec storage option, e.g. "
    "endpoint_url=http://127.0.0.1:9000 (repeatable). Credentials come from the provider's "
    "environment variables and config files, never from here.")


def _in_storage_scope(pairs: tuple[str, ...], body: Callable[[], int | None]) -> int | None:
    """Run ``body`` with the ``--storage-option`` settings active (parse errors exit 2)."""
    from vecferry.storage import parse_storage_options, using

    with using(parse_storage_options(pairs)):
        return body()


def _reader_side_options(routed: dict[str, Any], fmt: str, side: str) -> dict[str, Any]:
    """Options for re-reading one end of a conversion (for verification)."""
    reading = {k: v for k, v in routed.items() if v is not None}
    dst_key = reading.pop("dst_api_key_env", None)
    if side == "destination" and dst_key:
        reading["api_key_env"] = dst_key
    if side == "destination":
        # The target is read back with its connection settings only, never the source's.
        reading = {k: v for k, v in reading.items() if k in ("api_key_env", "timeout",
                                                             "id_field", "max_retries",
                                                             "allow_lossy")}
    opts, _ = _route(reading, fmt, fmt)
    return opts


def _convert(src: str, dst: str, kw: dict[str, Any], desc: str, verify: bool = False) -> int:
    return _convert_report(src, dst, kw, desc, verify, last=True)[0]


def _convert_report(src: str, dst: str, kw: dict[str, Any], desc: str, verify: bool = False,
                    last: bool = False) -> tuple[int, dict[str, Any]]:
    """Run one conversion for a command: its exit code and report (printed as asked).

    Once ``convert`` has returned, the output is complete and in place. The ``last``
    conversion of a command then decides its outcome (``_outcome_decided``: interrupts are
    ignored while the report is printed and the process exits) as soon as what it was asked
    to do is done, its ``--verify`` included; a conversion that is not the last (one
    collection of ``copy`` between servers) holds them while its report is printed, and is
    stopped after. Whatever stops it once ``convert`` returned (an interrupt during the
    verification, an error reading the output back) says the output is whole."""
    from vecferry.converters import resolve
    from vecferry.pipeline import STOPPED_BEFORE_REPORT, convert

    quiet, as_json = kw.pop("quiet"), kw.pop("as_json")
    verify = kw.pop("verify_after") or verify
    if verify and kw.get("limit") is not None:
        from vecferry.errors import UsageError

        raise UsageError("--verify compares the whole source with the output, so it cannot "
                         "follow a run cut short by --limit",
                         hint="drop --limit, or run `vecferry verify` on a source of that size")
    src_fmt = resolve(src, kw["from_format"], role="reader").name
    dst_fmt = resolve(dst, kw["to_format"], role="writer").name
    if kw.get("engine") != "ray":  # Ray's driver works with pandas objects
        from vecferry.stream import skip_pandas_probe

        skip_pandas_probe()
    routed = {k: kw.pop(k) for k in list(kw) if k in ROUTES}
    for key, flag in (("max_part_size", "--max-part-size"),
                      ("part_compression", "--jsonl-compression")):
        formats = ROUTES[key][1] or ()
        if routed.get(key) is not None and dst_fmt not in formats:
            from vecferry.errors import UsageError

            raise UsageError(f"{flag} applies to {' and '.join(formats)} targets, not "
                             f"{dst_fmt}", hint=f"drop {flag}, or choose a "
                             f"{' or '.join(formats)} directory target (ending in /)")
    reader_opts, writer_opts = _route(routed, src_fmt, dst_fmt)
    # --json is for scripts: the report on stdout is the summary; stderr keeps warnings
    quiet = quiet or as_json
    bar = _progress(quiet, desc)
    report: dict[str, Any] | None = None
    stopped = STOPPED_BEFORE_REPORT
    try:
        try:
            report = convert(src, dst, reader_options=reader_opts, writer_options=writer_opts,
                             progress=bar, check_duplicates=not kw.pop("no_duplicate_check"),
                             workers=routed.get("workers"), **kw)
            if last and not verify:
                _outcome_decided()
        finally:
            bar.close()
        if report.get("dry_run"):
            if last:
                _outcome_decided()
            if as_json:
                _emit_json({"ok": True, **report})
            _print_dry_run(report, quiet)
            return EXIT_OK, report
        # a resumed load's exit says whether the load as a whole rejected records
        code = EXIT_REJECTS if report.get("rejected_total", report["rejected"]) else EXIT_OK
        if verify:
            from vecferry.verification import verify as run_verify

            stopped = VERIFY_CUT
            if not quiet:
                _err("verifying ...")
            # what the conversion rejected is left out of the comparison, not called missing
            # (search parity included: it leaves out the same points)
            skipped = kw["on_error"] == "skip"
            result = run_verify(src, dst, from_format=kw["from_format"], to_format=dst_fmt,
                                reader_options=_reader_side_options(routed, src_fmt, "source"),
                                dst_options=_reader_side_options(routed, dst_fmt,
                                                                 "destination"),
                                on_error="skip" if skipped else "fail",
                                rejects=report.get("rejects_file") if skipped else None,
                                # a FAISS target kept the one vector chosen: compared by it
                                only_vectors=[writer_opts["vector"]]
                                if writer_opts.get("vector") is not None else None)
            report["verify"] = result
            if not result["ok"]:
                code = EXIT_VERIFY
            if last:
                _outcome_decided()
        stopped = "the run was stopped once its report was printed"
        # printed whole: an interrupt (of a conversion that is not the last) waits for it
        with _interrupts_held():
            if as_json:
                _emit_json({"ok": code in (EXIT_OK, EXIT_REJECTS), **report})
            _print_report(report, quiet)
            if "verify" in report:
                _print_verify(report["verify"], quiet)
        return code, report
    except BaseException as exc:
        if report is not None and not report.get("dry_run"):
            from vecferry.errors import add_notice
            from vecferry.pipeline import output_whole_notice

            add_notice(exc, output_whole_notice(
                dst, report.get("written_total", report["written"]),
                report.get("rejected_total", report["rejected"]), report.get("rejects_file"),
                stopped))
        raise


def _print_dry_run(report: dict[str, Any], quiet: bool) -> None:
    for w in report.get("warnings", []):
        _err(f"warning: {w}")
    if quiet:
        return
    points = report["points"]
    _err(f"dry run: {'?' if points is None else points} point(s) {report['from']} -> "
         f"{report['to']}: {report['destination']}; nothing was written")
    target = report.get("target")
    if target:
        what = {"create": "would be created", "drop and create": "would be dropped and "
                "created anew", "append": "exists: points would be added or updated by id"}
        # an Edge shard is a folder, not a named collection
        name = (f"collection {target['collection']!r}" if target.get("collection") is not None
                else "the shard")
        _err(f"{name} {what[target['action']]}"
             + (" (HNSW indexing off during the load)" if target.get("bulk") else ""))
        if "config" in target:
            _err("config: " + json.dumps(target["config"], sort_keys=True, default=str))


def _copy_all(src: str, dst: str, kw: dict[str, Any]) -> int:
    """``vecferry copy`` of two servers: every collection of ``src`` to one of the same name
    on ``dst``, one after another, each verified. A collection that fails is reported and the
    rest go on; the exit code is the worst (1 failed, 4 differs, 3 rejects, 0)."""
    from vecferry.converters.qdrant import collection_location, collection_names
    from vecferry.errors import UsageError, VecferryError

    if kw.get("state"):
        raise UsageError("--state names one collection's state file; a copy of every "
                         "collection keeps one per collection",
                         hint="drop --state (--resume works without it)")
    quiet, as_json = kw["quiet"], kw["as_json"]
    names = collection_names(src, api_key_env=kw.get("api_key_env"), timeout=kw.get("timeout"),
                             max_retries=kw.get("max_retries"))
    results: dict[str, dict[str, Any]] = {}
    codes = []
    for name in names:
        if not quiet and not as_json:
            _err(f"collection {name}:")
        one = {**kw, "as_json": False, "quiet": quiet or as_json}
        try:
            code, report = _convert_report(collection_location(src, name),
                                           collection_location(dst, name), one,
                                           f"copy {name}", verify=True)
        except VecferryError as err:
            exc = _as_shown(err)
            _err(f"error: {exc}")
            results[name] = {"ok": False, **exc.as_dict()}
            codes.append(EXIT_FAILED)
            continue
        results[name] = {"ok": code in (EXIT_OK, EXIT_REJECTS), **report}
        codes.append(code)
    _outcome_decided()  # every collection was copied, or failed: what is left is to say so
    failed = [n for n, r in results.items() if not r["ok"]]
    if as_json:
        _emit_json({"ok": not failed, "collections": results})
    if not names:
        _err(f"{src} holds no collections: nothing to copy")
    elif not quiet or failed:
        done = "checked (dry run)" if kw.get("dry_run") else "copied and verified"
        _err(f"{len(names) - len(failed)} of {len(names)} collection(s) {done}"
             + (f"; not: {', '.join(failed)} (run the same command again with --resume)"
                if failed else ""))
    for worst in (EXIT_FAILED, EXIT_VERIFY, EXIT_REJECTS):
        if worst in codes:
            return worst
    return EXIT_OK


def _print_verify(result: dict[str, Any], quiet: bool) -> None:
    for w in result.get("warnings", []):
        _err(f"warning: {w}")
    for p in result["problems"]:
        _err(f"differs: {p}")
    if quiet:
        return
    src = result["source"]
    line = f"source {src['count']} points, digest {src['digest']}"
    if "destination" in result:
        dst = result["destination"]
        if result.get("sample"):
            spot = result["sample"]
            line += (f"; destination {dst['count']} points; spot check of {spot['size']} "
                     "sampled points by id")
        else:
            line += f"; destination {dst['count']} points, digest {dst['digest']}"
    else:
        rec = result["recorded_digest"]
        line += f"; recorded {rec.get('count')} points, digest {rec.get('value')}"
    _err(line)
    search = result.get("search")
    if search:
        lat = "".join(f"; {side} latency p50/p95/p99 {v['p50']}/{v['p95']}/{v['p99']} ms"
                      for side, v in search.get("latency_ms", {}).items())
        ties = (f"; {search['tied_ids']} tied ids counted as found"
                if search.get("tied_ids") else "")
        _err(f"search parity: recall@{search['k']} {search['recall']:.4f} over "
             f"{search['queries']} queries ({search['distance']}){ties}{lat}")
    _err(f"verified: {result.get('verdict', 'identical')}" if result["ok"]
         else "verification FAILED")


class _Cli(click.Group):
    """The command group; with ``--json`` a usage error click finds itself (an unknown option,
    a bad value) is also reported on stdout as JSON, as vecferry's own errors are, so a script
    reading stdout always gets an answer."""

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            try:
                return super().main(args, prog_name, complete_var, False, **extra)
            finally:
                _give_back_interrupts()
        argv = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(argv, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            if "--json" in argv:
                _emit_json({"ok": False, "error": "UsageError", "message": exc.format_message(),
                            "hint": None, "location": {}})
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort as exc:
            # click turns an interrupt during its own parsing into Abort, SIGTERM's included
            if isinstance(exc.__context__, _Terminated):
                _err("terminated")
                sys.exit(EXIT_TERMINATED)
            _err("Aborted!")
            sys.exit(EXIT_INTERRUPTED)
        finally:
            if args is not None:
                # given its arguments, it runs inside another program (a test's CliRunner),
                # whose interrupts they are; run on this process's own command line, they stay
                # ignored to its exit (``_outcome_decided``)
                _give_back_interrupts()
            _release_sigterm()
        sys.exit(code if isinstance(code, int) else EXIT_OK)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vecferry")
def main() -> None:
    """Move vector data between numpy, FAISS, JSONL, Parquet and Qdrant, losslessly.

    \b
    Exit codes: 0 done, 1 failed, 2 usage error, 3 done with rejected
    records, 4 verification found differences, 130 interrupted (Ctrl-C),
    143 terminated (SIGTERM).
    """
    _take_sigterm()


@main.command("convert")
@click.argument("src")
@click.argument("dst")
@_common_convert_options
def convert_cmd(src: str, dst: str, **kw: Any) -> None:
    """Convert SRC into DST (any pair of formats; see `vecferry formats`).

    SRC and DST may be s3://, gs://, az:// locations (https:// for SRC), streamed.
    """
    pairs = kw.pop("storage_option")
    _run(lambda: _in_storage_scope(pairs, lambda: _convert(src, dst, kw, "convert")),
         kw["as_json"], _left_by_convert(dst, kw, "convert"))


@main.command("copy")
@click.argument("src")
@click.argument("dst")
@_common_convert_options
def copy_cmd(src: str, dst: str, **kw: Any) -> None:
    """Copy a Qdrant collection to another Qdrant (config, payload indexes, strict mode,
    aliases, shard keys, points), then verify it.

    The copy ends with `verify` (counts, digests, per-id diff, search parity): exit 4 when the
    collections differ. Given two servers (qdrant://HOST[:PORT], no collection), every
    collection of SRC is copied to one of the same name on DST, one after another.
    """
    from vecferry.errors import UsageError

    def body() -> int:
        from vecferry.converters import resolve
        from vecferry.converters.qdrant import server_root

        roots = server_root(src), server_root(dst)
        if roots[0] and roots[1]:
            return _copy_all(roots[0], roots[1], kw)
        if roots[0] or roots[1]:
            raise UsageError("copy takes two collections, or two servers (to copy every "
                             "collection)", hint="e.g. qdrant://a:6333/docs qdrant://b/docs, "
                             "or qdrant://a:6333 qdrant://b")
        for loc, role in ((src, "reader"), (dst, "writer")):
            if not resolve(loc, None, role=role).name.startswith("qdrant"):
                raise UsageError(f"copy moves Qdrant collections; {loc} is not a Qdrant "
                                 "location", hint="use `vecferry convert` for files")
        return _convert(src, dst, kw, "copy", verify=True)

    pairs = kw.pop("storage_option")
    _run(lambda: _in_storage_scope(pairs, body), kw["as_json"],
         _left_by_convert(dst, kw, "copy"))


@main.command("verify")
@click.argument("src")
@click.argument("dst", required=False)
@click.option("--from", "from_format", metavar="FORMAT", help="Format of SRC.")
@click.option("--to", "to_format", metavar="FORMAT", help="Format of DST.")
@click.option("--queries", type=click.IntRange(min=0), default=10, show_default=True,
              help="Query vectors sampled from SRC for search parity (0: none).")
@click.option("--k", "k", type=click.IntRange(min=1), default=10, show_default=True,
              help="Top-k compared in search parity.")
@click.option("--min-recall", type=click.FloatRange(0, 1), default=0.99, show_default=True,
              help="Search parity passes at this recall@k.")
@click.option("--tolerance", type=click.FloatRange(min=0), help="Compare vectors by maximum "
              "absolute error (for float16, uint8 or quantized targets) instead of bytes.")
@click.option("--diff", "diff_file", metavar="FILE", help="Write the differing ids (JSONL).")
@click.option("--vector", metavar="NAME", help="Dense vector used for search parity.")
@click.option("--sample", type=click.IntRange(min=1), help="Spot check: compare N random "
              "source points with DST by id instead of every point (fast on a big Qdrant "
              "collection: only those points are fetched).")
@click.option("--ids", metavar="FILE", help="numpy SRC: ids .npy.")
@click.option("--payloads", metavar="FILE", help="numpy / FAISS SRC: payloads file.")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail",
              show_default=True, help="skip: leave SRC's bad records out of the comparison, as "
              "a conversion with --on-error skip left them out of DST.")
@click.option("--rejects", "rejects_file", metavar="FILE", help="The conversion's rejects "
              "file: the points DST refused are left out of the comparison too.")
@_source_reading
@click.option("--api-key-env", metavar="NAME", help="Qdrant: variable holding the API key.")
@click.option("--dst-api-key-env", metavar="NAME", help="Qdrant: variable holding DST's "
              "API key (default: the same as SRC's).")
@click.option("--timeout", type=float, metavar="SECONDS", help="Qdrant: request timeout.")
@click.option("--id-field", metavar="NAME", help="Qdrant: payload field keeping original ids "
              "that are not unsigned ints or UUIDs (as given to convert).")
@click.option("--quiet", "-q", is_flag=True, help="Print only differences.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@_STORAGE_OPTION
def verify_cmd(src: str, dst: str | None, from_format: str | None, to_format: str | None,
               queries: int, k: int, min_recall: float, tolerance: float | None,
               diff_file: str | None, vector: str | None, sample: int | None,
               ids: str | None, payloads: str | None, on_error: str, rejects_file: str | None,
               api_key_env: str | None, dst_api_key_env: str | None,
               timeout: float | None, id_field: str | None,
               quiet: bool, as_json: bool, storage_option: tuple[str, ...] = (),
               **mapping: Any) -> None:
    """Prove DST holds what SRC holds, or (one location) that a file is intact.

    Compares counts and an order-independent digest of every point; when they differ, names the
    ids missing on either side and those whose vector or payload differs. Search parity:
    recall@k of top-k results for query vectors sampled from SRC. Exit 0 when everything
    matches, 4 when something differs.
    """

    def body() -> int:
        from vecferry.converters import resolve
        from vecferry.stream import skip_pandas_probe
        from vecferry.verification import verify

        skip_pandas_probe()
        conn = {"timeout": timeout, "id_field": id_field}
        src_fmt = resolve(src, from_format).name
        # verify gives it to whichever side is a FAISS index (either may be lossy)
        allow_lossy = bool(mapping.pop("allow_lossy", None))
        src_opts, _ = _route({**conn, "api_key_env": api_key_env, "ids": ids,
                              "payloads": payloads, **mapping}, src_fmt, src_fmt)
        dst_opts: dict[str, Any] = {}
        if dst is not None:
            dst_fmt = resolve(dst, to_format).name
            dst_opts, _ = _route({**conn, "api_key_env": dst_api_key_env or api_key_env},
                                 dst_fmt, dst_fmt)
        result = verify(src, dst, from_format=from_format, to_format=to_format,
                        queries=queries, k=k, tolerance=tolerance, diff=diff_file, sample=sample,
                        min_recall=min_recall, vector=vector, allow_lossy=allow_lossy,
                        src_options=src_opts, dst_options=dst_opts, on_error=on_error,
                        rejects=rejects_file)
        if as_json:
            _emit_json(result)
        # as convert --json: stdout is the summary; stderr keeps warnings and differences
        _print_verify(result, quiet or as_json)
        return EXIT_OK if result["ok"] else EXIT_VERIFY

    _run(lambda: _in_storage_scope(storage_option, body), as_json, _left_by_verify(diff_file))


@main.command("inspect")
@click.argument("src")
@click.option("--from", "from_format", metavar="FORMAT", help="Source format.")
@click.option("--ids", metavar="FILE", help="numpy: ids .npy.")
@click.option("--payloads", metavar="FILE", help="numpy / FAISS: payloads file.")
@_source_reading
@click.option("--api-key-env", metavar="NAME", help="Qdrant: variable holding the API key.")
@click.option("--timeout", type=float, metavar="SECONDS", help="Qdrant: request timeout.")
@click.option("--max-retries", type=click.IntRange(min=0), help="Qdrant: retries of a "
              "transient failure.")
@click.option("--id-field", metavar="NAME", help="Qdrant: payload field keeping original ids "
              "that are not unsigned ints or UUIDs.")
@click.option("--sample", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Points read to sample payload keys.")
@click.option("--ram-budget", metavar="SIZE", default="1GiB", show_default=True,
              help="RAM the Qdrant collection may use (8GiB, 512MiB, bytes): decides the "
                   "sizing recommendation and warnings.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")
@_STORAGE_OPTION
def inspect_cmd(src: str, from_format: str | None, ids: str | None, payloads: str | None,
                sample: int, ram_budget: str, as_json: bool,
                storage_option: tuple[str, ...] = (), **mapping: Any) -> None:
    """Describe SRC: format, count, vectors, id kind, payload keys, size, first ids, and the
    RAM and disk a Qdrant collection of it needs (sizing), with a recommendation. Given a
    server (qdrant://HOST[:PORT], no collection): its collections, with their points,
    vectors, aliases and shard keys."""

    def body() -> int:
        from vecferry.converters import resolve
        from vecferry.inspect import inspect_location
        from vecferry.sizing import parse_bytes
        from vecferry.stream import skip_pandas_probe

        skip_pandas_probe()
        from vecferry.converters.qdrant import server_overview, server_root

        root = server_root(src)
        if root is not None:
            collections = server_overview(root, api_key_env=mapping.get("api_key_env"),
                                          timeout=mapping.get("timeout"),
                                          max_retries=mapping.get("max_retries"))
            if as_json:
                _emit_json({"location": root, "collections": collections})
            else:
                _print_server(root, collections)
            return EXIT_OK
        fmt = resolve(src, from_format).name
        options, _ = _route({"ids": ids, "payloads": payloads, **mapping}, fmt, fmt)
        info = inspect_location(src, from_format=from_format, sample=sample,
                                reader_options=options, ram_budget=parse_bytes(ram_budget))
        if as_json:
            _emit_json(info)
        else:
            _print_inspect(info)
        return EXIT_OK

    _run(lambda: _in_storage_scope(storage_option, body), as_json)


def _print_server(root: str, collections: list[dict[str, Any]]) -> None:
    click.echo(f"server:      {root}")
    click.echo(f"collections: {len(collections)}")
    for c in collections:
        vectors = ", ".join(
            f"{v['name'] or '(unnamed)'} ({v['kind']}"
            + (f" {v['size']}" if v["size"] else "") + (f" {v['distance']}" if v["distance"]
                                                          else "") + ")"
            for v in c["vectors"]) or "none"
        points = "?" if c["points"] is None else f"{c['points']:,}"
        line = f"  {c['name']}: {points} points; vectors {vectors}"
        if c["aliases"]:
            line += f"; aliases {', '.join(c['aliases'])}"
        if "shard_keys" in c:
            line += f"; shard keys {', '.join(map(repr, c['shard_keys']))}"
        click.echo(line)


def _print_inspect(info: dict[str, Any]) -> None:
    click.echo(f"location:  {info['location']}")
    click.echo(f"format:    {info['format']}")
    count = info["count"]
    if count is None:
        click.echo("points:    unknown (not counted cheaply)")
    elif info.get("count_recorded"):
        click.echo(f"points:    {count} (as its manifest records; vecferry verify "
                   f"{info['location']} reads them all)")
    else:
        click.echo(f"points:    {count}")
    click.echo(f"id kind:   {info['id_kind']}")
    if info.get("size_bytes") is not None:
        click.echo(f"size:      {info['size_bytes']:,} bytes")
    click.echo("vectors:" if info["vectors"] else
               "vectors:   none (the points carry ids and payloads only)")
    for v in info["vectors"]:
        size = "" if v["size"] is None else f" size={v['size']}"
        dist = "" if not v["distance"] else f" distance={v['distance']}"
        click.echo(f"  - {v['name'] or '(unnamed)'}: {v['kind']} {v['datatype']}{size}{dist}")
    keys = info["payload_keys"]
    click.echo(f"payload keys (first {info['sampled']} points): "
               + (", ".join(f"{k} ({n})" for k, n in keys.items()) if keys else "none"))
    click.echo(f"first ids: {', '.join(repr(i) for i in info['first_ids'])}")
    if info.get("rejected_in_sample"):
        click.echo(f"bad:       {info['rejected_in_sample']} bad record(s) among the first "
                   "read (convert stops at the first; --on-error skip writes them to a "
                   "rejects file)")
    faiss_facts = (info.get("extra") or {}).get("faiss")
    if faiss_facts:
        click.echo(f"index:     {faiss_facts.get('index_type')}; distance: "
                   f"{faiss_facts.get('distance_decided_by')}")
        store = faiss_facts.get("docstore")
        if store:
            owner = {"langchain": "LangChain", "llamaindex": "LlamaIndex"}.get(store["format"])
            click.echo(f"docstore:  {store['location']} ({owner}, {store['documents']:,} "
                       f"{store['unit']}; payload keys {', '.join(store['payload_keys'])})")
    if info.get("suggested_mapping"):
        flags = info["suggested_mapping"]["flags"]
        click.echo(f"mapping:   read with the suggested mapping; convert with: {flags}")
    if info.get("collection"):
        click.echo(f"collection config: {json.dumps(info['collection'], default=str)}")
    if info.get("sizing"):
        from vecferry.sizing import text_lines

        for line in text_lines(info["sizing"]):
            click.echo(line)
    for warning in info.get("warnings", []):
        _err(f"warning: {warning}")


# ---------------------------------------------------------------------------------- snapshots


class _SnapshotBars:
    """Progress of snapshot steps on stderr: one bar per step (bytes, or points for count)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bars: dict[str, Any] = {}

    def __call__(self, step: str, done: int, total: int | None) -> None:
        if self.quiet:
            return
        bar = self.bars.get(step)
        if bar is None:
            from tqdm import tqdm

            unit = "pt" if step == "count" else "B"
            bar = tqdm(desc=step, total=total, unit=unit, unit_scale=True,
                       unit_divisor=1000 if unit == "pt" else 1024, file=sys.stderr,
                       dynamic_ncols=True, disable=None, leave=True)
            self.bars[step] = bar
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def _snapshot_options(f: Callable) -> Callable:
    decorators = [
        click.option("--shard", type=click.IntRange(min=0), metavar="ID",
                     help="Snapshots of one shard of the collection."),
        click.option("--api-key-env", metavar="NAME", help="Environment variable holding the "
                     "API key (default QDRANT_API_KEY)."),
        click.option("--timeout", type=float, metavar="SECONDS",
                     help="Per-request timeout (default 300)."),
        click.option("--max-retries", type=click.IntRange(min=0),
                     help="Retries of a transient failure (default 6)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress or summary."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on "
                     "stdout."),
    ]
    return _with_options(f, decorators)


def _snapshot_client(location: str, kw: dict[str, Any]):
    from vecferry.snapshots import SnapshotClient

    return SnapshotClient(location, shard=kw.get("shard"), api_key_env=kw.get("api_key_env"),
                          timeout=kw.get("timeout"), max_retries=kw.get("max_retries"))


def _snapshot_run(location: str, kw: dict[str, Any],
                  body: Callable[[Any, _SnapshotBars], dict[str, Any]],
                  summary: Callable[[dict[str, Any]], str]) -> None:
    def run() -> int:
        bars = _SnapshotBars(kw["quiet"])
        try:
            with _snapshot_client(location, kw) as client:
                result = body(client, bars)
        finally:
            bars.close()
        if kw["as_json"]:
            _emit_json({"ok": True, **result})
        for w in result.get("warnings") or []:  # as for convert: -q and --json keep them
            _err(f"warning: {w}")
        if not kw["as_json"] and not kw["quiet"]:
            _err(summary(result))
        return EXIT_OK

    _run(run, kw["as_json"], LEFT_SNAPSHOT)


@main.group("snapshot")
def snapshot_group() -> None:
    """Qdrant snapshots over REST: create, list, download, upload, restore, delete, copy.

    \b
    LOCATION is qdrant://HOST[:PORT]/COLLECTION (qdrants:// for HTTPS), or
    qdrant://HOST[:PORT] for full-instance snapshots; --shard ID for one shard.
    The API key comes from QDRANT_API_KEY or --api-key-env NAME.
    Exit codes: 0 done, 1 failed, 2 usage error, 4 checksum or count
    mismatch, 130 interrupted.
    """


@snapshot_group.command("create")
@click.argument("location")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the snapshot exists (else it is made in the background).")
@_snapshot_options
def snapshot_create_cmd(location: str, wait: bool, **kw: Any) -> None:
    """Create a snapshot; prints its name, size and SHA-256."""

    def body(client: Any, bars: _SnapshotBars) -> dict[str, Any]:
        snap = client.create(wait=wait)
        return {"snapshot": snap, "accepted": snap is None}

    def summary(r: dict[str, Any]) -> str:
        s = r["snapshot"]
        if s is None:
            return "snapshot creation accepted; it runs in the background (see `list`)"
        return f"created {s['name']} ({s.get('size') or 0:,} bytes, sha256 {s.get('checksum')})"

    _snapshot_run(location, kw, body, summary)


@snapshot_group.command("list")
@click.argument("location")
@_snapshot_options
def snapshot_list_cmd(location: str, **kw: Any) -> None:
    """List snapshots, newest first: name, creation time, size, SHA-256."""

    def run() -> int:
        with _snapshot_client(location, kw) as client:
            snaps = client.list()
        if kw["as_json"]:
            _emit_json(snaps)
            return EXIT_OK
        for s in snaps:
            click.echo(f"{s.get('name')}\t{s.get('creation_time') or '-'}\t"
                       f"{s.get('size') or 0}\t{s.get('checksum') or '-'}")
        if not snaps and not kw["quiet"]:
            _err("no snapshots")
        return EXIT_OK

    _run(run, kw["as_json"])


@snapshot_group.command("download")
@click.argument("location")
@click.argument("name")
@click.option("--out", "-o", "out", required=True, metavar="FILE", help="Where to write it: "
              "a local file, or s3:// gs:// az:// (streamed into the bucket, no local copy).")
@click.option("--overwrite", is_flag=True, help="Replace an existing FILE.")
@_STORAGE_OPTION
@_snapshot_options
def snapshot_download_cmd(location: str, name: str, out: str, overwrite: bool,
                          storage_option: tuple[str, ...], **kw: Any) -> None:
    """Download snapshot NAME to FILE: streamed, resumed (HTTP Range) after an interruption,
    SHA-256 checked against the server's checksum before FILE appears. To a bucket
    (s3://BUCKET/KEY) the bytes stream into one multipart upload, completed only when the
    checksum matches."""

    def body(client: Any, bars: _SnapshotBars) -> dict[str, Any]:
        from vecferry.storage import parse_storage_options, using

        with using(parse_storage_options(storage_option)):
            return client.download(name, out, overwrite=overwrite, progress=bars)

    def summary(r: dict[str, Any]) -> str:
        state = "sha256 verified" if r["verified"] else "sha256 NOT verified (see the warning)"
        resumed = f", resumed at byte {r['resumed_from']:,}" if r["resumed_from"] else ""
        return (f"downloaded {r['name']} -> {r['path']} ({r['bytes']:,} bytes in "
                f"{r['seconds']:.2f} s{resumed}); {state}: {r['sha256']}")

    _snapshot_run(location, kw, body, summary)


@snapshot_group.command("upload")
@click.argument("file")
@click.argument("location")
@click.option("--priority", type=click.Choice(["snapshot", "replica", "no_sync"]),
              help="Source of truth when the collection has other replicas.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the recovery is done.")
@click.option("--overwrite", is_flag=True, help="Replace a collection that holds points "
              "(recovering a snapshot replaces it whole).")
@_STORAGE_OPTION
@_snapshot_options
def snapshot_upload_cmd(file: str, location: str, priority: str | None, wait: bool,
                        overwrite: bool, storage_option: tuple[str, ...], **kw: Any) -> None:
    """Upload FILE and recover the collection (or shard) at LOCATION from it: multipart,
    streamed, with its SHA-256 so the server refuses a damaged upload. FILE may be
    s3:// gs:// az://: it is read twice, streamed (SHA-256, then the upload), never copied
    to disk."""

    def body(client: Any, bars: _SnapshotBars) -> dict[str, Any]:
        from vecferry.storage import parse_storage_options, using

        with using(parse_storage_options(storage_option)):
            return client.upload(file, priority=priority, wait=wait, progress=bars,
                                 overwrite=overwrite)

    def summary(r: dict[str, Any]) -> str:
        return (f"uploaded {file} ({r['bytes']:,} bytes, sha256 {r['sha256']}) in "
                f"{r['seconds']:.2f} s; {location} recovered from it")

    _snapshot_run(location, kw, body, summary)


@snapshot_group.command("restore")
@click.argument("location")
@click.option("--from", "source", required=True, metavar="URL", help="Snapshot URL the "
              "server fetches (http(s)://... or file:///path on the server).")
@click.option("--priority", type=click.Choice(["snapshot", "replica", "no_sync"]),
              help="Source of truth when the collection has other replicas.")
@click.option("--checksum", metavar="SHA256", help="Expected SHA-256; the server refuses "
              "other bytes.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the recovery is done.")
@click.option("--overwrite", is_flag=True, help="Replace a collection that holds points "
              "(recovering a snapshot replaces it whole).")
@_snapshot_options
def snapshot_restore_cmd(location: str, source: str, priority: str | None,
                         checksum: str | None, wait: bool, overwrite: bool, **kw: Any) -> None:
    """Have the server at LOCATION recover the collection (or shard) from a snapshot URL.

    For a file on this machine use `vecferry snapshot upload FILE LOCATION`.
    """

    def body(client: Any, bars: _SnapshotBars) -> dict[str, Any]:
        from pathlib import Path

        from vecferry.errors import UsageError

        if "://" not in source and Path(source).exists():
            raise UsageError(f"{source} is a local file; the server cannot fetch it",
                             hint=f"use `vecferry snapshot upload {source} {location}`")
        return {"result": client.recover(source, priority=priority, checksum=checksum,
                                         wait=wait, overwrite=overwrite)}

    _snapshot_run(location, kw, body, lambda r: f"{location} recovered from {source}")


@snapshot_group.command("delete")
@click.argument("location")
@click.argument("name")
@_snapshot_options
def snapshot_delete_cmd(location: str, name: str, **kw: Any) -> None:
    """Delete snapshot NAME from the server."""

    def body(client: Any, bars: _SnapshotBars) -> dict[str, Any]:
        return {"deleted": client.delete(name), "name": name}

    _snapshot_run(location, kw, body, lambda r: f"deleted {name}")


@snapshot_group.command("copy")
@click.argument("src")
@click.argument("dst")
@click.option("--priority", type=click.Choice(["snapshot", "replica", "no_sync"]),
              default="snapshot", show_default=True, help="Recovery priority on DST.")
@click.option("--workdir", metavar="DIR", help="Where the snapshot file is kept between "
              "download and upload (default: the system's temporary directory).")
@click.option("--keep", is_flag=True, help="Keep the snapshot on SRC and the local file.")
@click.option("--overwrite", is_flag=True, help="Replace a collection that holds points "
              "(recovering a snapshot replaces it whole).")
@click.option("--dst-api-key-env", metavar="NAME", help="Variable holding DST's API key "
              "(default: the same as SRC's).")
@click.option("--api-key-env", metavar="NAME", help="Environment variable holding the API "
              "key (default QDRANT_API_KEY).")
@click.option("--timeout", type=float, metavar="SECONDS",
              help="Per-request timeout (default 300).")
@click.option("--max-retries", type=click.IntRange(min=0),
              help="Retries of a transient failure (default 6).")
@click.option("--quiet", "-q", is_flag=True, help="No progress or summary.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def snapshot_copy_cmd(src: str, dst: str, priority: str, workdir: str | None, keep: bool,
                      overwrite: bool, dst_api_key_env: str | None, api_key_env: str | None,
                      timeout: float | None, max_retries: int | None, quiet: bool,
                      as_json: bool) -> None:
    """Copy collection SRC to DST through a snapshot: create -> download (SHA-256 checked)
    -> upload (checksum sent) -> count check. Exit 4 when the counts differ."""

    def run() -> int:
        from vecferry.snapshots import copy_collection

        bars = _SnapshotBars(quiet)
        try:
            report = copy_collection(src, dst, priority=priority, workdir=workdir, keep=keep,
                                     overwrite=overwrite,
                                     api_key_env=api_key_env, dst_api_key_env=dst_api_key_env,
                                     timeout=timeout, max_retries=max_retries, progress=bars)
        finally:
            bars.close()
        if as_json:
            _emit_json(report)
        for w in report.get("warnings") or []:
            _err(f"warning: {w}")
        if not as_json and not quiet:
            steps = report["steps"]
            _err(f"copied {report['from']} -> {report['to']} via snapshot "
                 f"{steps['create']['name']} ({steps['download']['bytes']:,} bytes, sha256 "
                 f"{steps['download']['sha256']}) in {report['seconds']:.2f} s; "
                 f"{report['destination_count']} points on both sides")
        return EXIT_OK

    # the library's notice, when it gave one, is the whole story of what the copy left
    _run(run, as_json, lambda notice: (notice or LEFT_COPY, {}))


@main.command("formats")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")
def formats_cmd(as_json: bool) -> None:
    """List the formats, how they are recognised, and whether they are installed."""
    from vecferry.converters import all_formats

    rows = []
    for spec in all_formats():
        missing = spec.missing()
        rows.append({
            "name": spec.name,
            "read": spec.reader is not None,
            "write": spec.writer is not None,
            "extensions": list(spec.extensions),
            "schemes": [f"{s}://" for s in spec.schemes],
            "installed": not missing,
            "install": None if not missing else f"pip install 'vecferry[{spec.extra}]'",
            "description": spec.description,
        })
    if as_json:
        _emit_json(rows)
        return
    recognised = [" ".join(r["extensions"] + r["schemes"]) for r in rows]
    width = max([len("recognised by"), *map(len, recognised)])  # third-party formats too
    click.echo(f"{'format':12} {'rw':3} {'installed':10} {'recognised by':{width}} description")
    for r, by in zip(rows, recognised, strict=True):
        rw = ("r" if r["read"] else "-") + ("w" if r["write"] else "-")
        installed = "yes" if r["installed"] else "no"
        click.echo(f"{r['name']:12} {rw:3} {installed:10} {by:{width}} {r['description']}")
        if r["install"]:
            click.echo(f"{'':27}install: {r['install']}")


if __name__ == "__main__":
    main()
