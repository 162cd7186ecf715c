"""The Python API's contract: storage options per thread, what writers take (schema, nulls,
their life cycle), convert's and verify's arguments, warnings a caller sees, hints that name
forms that work, and VDF index names."""

from __future__ import annotations

import importlib
import json
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vecferry
from failing import fails
from roundtrip import leftovers
from vecferry import storage
from vecferry.converters.base import check_batch
from vecferry.errors import (
    InputError,
    OutputExistsError,
    RecordError,
    SchemaError,
    UnsupportedError,
    UsageError,
    VecferryWarning,
)
from vecferry.pipeline import prefetch
from vecferry.stream import Manifest, VectorSpec

SCHEMA = Manifest(vectors=[VectorSpec(name="", size=4)], id_kind="int").schema()
F32x4 = pa.list_(pa.float32(), 4)
HINT = ("write batches of the schema the writer was opened with: a reader's batches, or "
        "pa.record_batch(arrays, schema=schema)")


def _npy(path: Path, rows: int = 6, dtype: Any = np.float32) -> str:
    np.save(path, (np.arange(rows * 4, dtype=np.float64).reshape(rows, 4) / 3).astype(dtype))
    return str(path)


def _jsonl(path: Path, points: list[dict[str, Any]]) -> str:
    path.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in points))
    return str(path)


# ------------------------------------------------------------------ storage options, threads


def test_storage_options_belong_to_the_thread_that_set_them() -> None:
    # Both threads inside their blocks at once, the first leaving first: a process-wide
    # stack showed each thread the other's options, and the first one's exit popped the
    # second's scope.
    inside = threading.Barrier(2, timeout=30)
    first_left = threading.Event()
    seen: dict[str, Any] = {}

    def first() -> None:
        with storage.using({"endpoint_url": "http://a"}):
            inside.wait()
            seen["first"] = storage.current_options()
        first_left.set()

    def second() -> None:
        with storage.using({"endpoint_url": "http://b"}):
            inside.wait()
            assert first_left.wait(30)
            seen["second"] = storage.current_options()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert seen == {"first": {"endpoint_url": "http://a"},
                    "second": {"endpoint_url": "http://b"}}
    assert storage.current_options() == {}


def test_the_reader_thread_sees_the_callers_storage_options() -> None:
    def options() -> Any:
        yield storage.current_options()

    with storage.using({"endpoint_url": "http://127.0.0.1:9"}), \
            storage.using({"anon": False}):
        got = list(prefetch(options()))
    assert got == [{"endpoint_url": "http://127.0.0.1:9", "anon": False}]


class _Gate:
    """A progress bar that holds the run at its first ``update`` or ``refresh`` (``at``) until
    ``go`` is set."""

    total = None

    def __init__(self, at: str):
        self.at = at
        self.reached = threading.Event()
        self.go = threading.Event()

    def _hold(self, where: str) -> None:
        if where == self.at and not self.reached.is_set():
            self.reached.set()
            assert self.go.wait(60)

    def update(self, n: int) -> None:
        self._hold("update")

    def refresh(self) -> None:
        self._hold("refresh")


def test_convert_in_two_threads_keeps_each_ones_storage_options(
        tmp_path: Path, opts: dict[str, Any], s3: Any, bucket: str) -> None:
    # A writes to S3 and, while it closes its output (which looks the object up again), B
    # runs in another thread with options of its own: before, A saw B's as well.
    src = _npy(tmp_path / "v.npy")
    results: dict[str, Any] = {}
    gate_a, gate_b = _Gate("refresh"), _Gate("update")

    def run(name: str, dst: str, options: dict[str, Any], gate: _Gate) -> None:
        try:
            results[name] = vecferry.convert(src, dst, storage_options=options, progress=gate,
                                             workers=1)["written"]
        except Exception as exc:
            results[name] = f"{type(exc).__name__}: {exc}"
        finally:
            gate.reached.set()

    a = threading.Thread(target=run, args=("a", f"s3://{bucket}/a.jsonl", opts, gate_a))
    a.start()
    assert gate_a.reached.wait(60)
    b = threading.Thread(target=run, args=("b", str(tmp_path / "b.jsonl"),
                                           {"no_such_setting": 1}, gate_b))
    b.start()
    assert gate_b.reached.wait(60)
    gate_a.go.set()
    a.join(60)
    gate_b.go.set()
    b.join(60)
    assert results == {"a": 6, "b": 6}
    s3.invalidate_cache()
    assert s3.exists(f"{bucket}/a.jsonl")
    assert storage.current_options() == {}


def test_storage_options_must_be_a_dict(tmp_path: Path) -> None:
    src = _npy(tmp_path / "v.npy")
    text = fails(UsageError, lambda: vecferry.convert(src, str(tmp_path / "o.jsonl"),
                                                       storage_options="endpoint_url=x"))
    assert text == ('storage_options must be a dict of option names to values, not str (e.g. '
                    'storage_options={"endpoint_url": "http://127.0.0.1:9000"})')
    assert not (tmp_path / "o.jsonl").exists()


# ---------------------------------------------------------------------- VDF index names


def _vdf_source(root: Path, indexes: dict[str, list[dict[str, Any]]]) -> str:
    (root / "data").mkdir(parents=True)
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int64()),
                             "vector": pa.array([[1.0, 2.0], [3.0, 4.0]],
                                                pa.list_(pa.float32()))}),
                   root / "data" / "1.parquet")
    (root / "VDF_META.json").write_text(json.dumps({"version": "0.1.9", "indexes": indexes}))
    return str(root)


def _entry(namespace: str = "") -> dict[str, Any]:
    return {"namespace": namespace, "vector_columns": ["vector"], "data_path": "data",
            "dimensions": 2, "metric": "Cosine"}


@pytest.mark.parametrize("name", ["../x", "/tmp/elsewhere", "..", ".", "a/b", "VDF_META.json"])
def test_vdf_index_option_must_be_a_plain_name(tmp_path: Path, name: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    src = _npy(work / "v.npy")
    out = str(work / "out")
    text = fails(UsageError, lambda: vecferry.convert(src, out, to_format="vdf",
                                                       writer_options={"vdf_index": name}))
    assert text == (f"{out}: --vdf-index {name!r} is not a plain name: the index is a folder "
                    "inside the output, so its name is one path component (no '/', not '.' or "
                    "'..') (e.g. --vdf-index vectors (in Python: "
                    'writer_options={"vdf_index": "vectors"}))')
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["v.npy", "work"]


def test_vdf_index_name_from_the_source_must_be_a_plain_name(tmp_path: Path) -> None:
    src = _vdf_source(tmp_path / "src", {"../escaped": [_entry()]})
    out = tmp_path / "out"
    text = fails(InputError, lambda: vecferry.convert(src, str(out), to_format="vdf"))
    assert text == (f"{src}/VDF_META.json: the source's VDF index name '../escaped' is not a "
                    "plain name: written as the index folder, it would put files outside the "
                    'output (name the index with --vdf-index NAME (in Python: '
                    'writer_options={"vdf_index": NAME}))')
    assert not (tmp_path / "escaped").exists() and not out.exists()
    assert leftovers(tmp_path) == []
    # what the hint says works
    report = vecferry.convert(src, str(out), to_format="vdf",
                              writer_options={"vdf_index": "safe"})
    assert report["written"] == 2
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "VDF_META.json", "safe", "safe/1.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_vdf_choose_names_the_namespaces_and_what_to_pass(tmp_path: Path) -> None:
    src = _vdf_source(tmp_path / "src", {"idx": [_entry("ns1"), _entry("ns2")],
                                         "other": [_entry()]})
    hint = ('(name one with --vdf-index INDEX/NAMESPACE, e.g. --vdf-index idx/ns1 (in Python: '
            'reader_options={"vdf_index": "idx/ns1"}); an index\'s unnamed namespace, or its only '
            "one, is named by the index's name alone)")
    assert fails(UsageError, lambda: vecferry.open_reader(src)) == (
        f"{src}: VDF_META.json holds 3 index namespaces (idx/ns1, idx/ns2, other), and "
        f"vecferry reads one per run {hint}")
    assert fails(UsageError, lambda: vecferry.open_reader(src, vdf_index="idx")) == (
        f"{src}: index 'idx' of VDF_META.json has 2 namespaces (idx/ns1, idx/ns2), and "
        f"vecferry reads one per run {hint}")
    assert fails(UsageError, lambda: vecferry.open_reader(src, vdf_index="nope")) == (
        f"{src}: VDF_META.json has no index or namespace 'nope'; it holds idx/ns1, idx/ns2, "
        f"other {hint}")
    assert fails(UsageError, lambda: vecferry.open_reader(src, vdf_index=3)) == (
        f'{src}: vdf_index takes an index name (text), not int (--vdf-index NAME or '
        'NAME/NAMESPACE (in Python: reader_options={"vdf_index": "NAME"}))')
    # what the hint says works, in both spellings
    for name in ("idx/ns1", "other"):
        with vecferry.open_reader(src, vdf_index=name) as reader:
            assert sum(b.num_rows for b in reader.batches(10)) == 2
    report = vecferry.convert(src, str(tmp_path / "o.jsonl"),
                              reader_options={"vdf_index": "idx/ns1"})
    assert report["written"] == 2


def test_vdf_index_name_picks_its_unnamed_namespace(tmp_path: Path) -> None:
    # "m" is the label of m's unnamed namespace: it was refused as naming both
    src = _vdf_source(tmp_path / "src", {"m": [_entry(), _entry("ns2")]})
    with vecferry.open_reader(src, vdf_index="m") as reader:
        assert (reader.manifest.source["index"], reader.manifest.source["namespace"]) == ("m", "")
    with vecferry.open_reader(src, vdf_index="m/ns2") as reader:
        assert reader.manifest.source["namespace"] == "ns2"


# ------------------------------------------------------------------ what writers are given


def _writers(tmp_path: Path) -> list[tuple[str, str | None]]:
    out = [(str(tmp_path / "o.jsonl"), None), (str(tmp_path / "o.parquet"), None),
           (str(tmp_path / "o_npy"), "npy"), (str(tmp_path / "o.faiss"), None),
           (str(tmp_path / "o_vdf"), "vdf")]
    if importlib.util.find_spec("qdrant_edge") is not None:
        out.append((f"qdrant-edge://{tmp_path / 'edge'}", None))
    return out


def _batch(**columns: Any) -> pa.RecordBatch:
    cols = {"id": pa.array([1, 2], pa.uint64()),
            "vector": pa.array([[1, 2, 3, 4], [5, 6, 7, 8]], F32x4),
            "payload": pa.array(['{"a": 1}', None])}
    cols.update(columns)
    return pa.record_batch({k: v for k, v in cols.items() if v is not None})


BAD_BATCHES = [
    ("string_id", SchemaError, _batch(id=pa.array(["a", "b"])),
     "column 'id' is string, but the stream schema says uint64"),
    ("float64_vector", SchemaError,
     _batch(vector=pa.array([[1, 2, 3, 4]] * 2, pa.list_(pa.float64(), 4))),
     "column 'vector' is fixed_size_list<item: double>[4], but the stream schema says "
     "fixed_size_list<item: float>[4]"),
    ("wrong_size", SchemaError, _batch(vector=pa.array([[1, 2, 3]] * 2, pa.list_(pa.float32(), 3))),
     "column 'vector' is fixed_size_list<item: float>[3], but the stream schema says "
     "fixed_size_list<item: float>[4]"),
    ("extra_column", SchemaError, _batch(text=pa.array(["x", "y"])),
     "the batch has a column 'text' the stream schema does not; the stream's columns are id, "
     "vector, payload"),
    ("missing_column", SchemaError, _batch(payload=None),
     "the batch has no column 'payload'; the stream's columns are id, vector, payload"),
    ("reordered", SchemaError,
     pa.record_batch({"vector": pa.array([[1, 2, 3, 4]], F32x4), "id": pa.array([1], pa.uint64()),
                      "payload": pa.array(["{}"])}),
     "the batch's columns are in another order (vector, id, payload); the stream's columns "
     "are id, vector, payload"),
    ("null_id", RecordError, _batch(id=pa.array([7, None], pa.uint64())),
     "the id of row 1 of the batch is null (1 null id(s) in 2 rows)"),
]


@pytest.mark.parametrize(("case", "cls", "batch", "message"), BAD_BATCHES,
                         ids=[c[0] for c in BAD_BATCHES])
def test_writers_refuse_batches_not_of_their_schema(tmp_path: Path, case: str, cls: type,
                                                    batch: pa.RecordBatch, message: str) -> None:
    for location, fmt in _writers(tmp_path):
        writer = vecferry.open_writer(location, SCHEMA, format=fmt)
        try:
            text = fails(cls, lambda w=writer: w.write_batch(batch))
        finally:
            writer.abort()
        hint = "every point needs an id" if cls is RecordError else HINT
        assert text == f"{location}: {message} ({hint})", location
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == []


def test_writers_refuse_what_is_not_a_record_batch(tmp_path: Path) -> None:
    location = str(tmp_path / "o.parquet")
    with pytest.raises(UsageError) as info, vecferry.open_writer(location, SCHEMA) as writer:
        writer.write_batch(pa.Table.from_batches([_batch()]))
    assert str(info.value) == (f"{location}: write_batch takes a pyarrow.RecordBatch, not "
                               "pyarrow.lib.Table (a table's batches are table.to_batches())")
    assert not Path(location).exists()


def test_writers_take_a_batch_built_without_the_schema(tmp_path: Path) -> None:
    # pa.record_batch gives nullable fields and no manifest: the same stream, which the
    # Parquet writer refused with an untyped ArrowInvalid ("Schema at index 0 was different")
    batch = pa.record_batch({"id": pa.array([1, 2], pa.uint64()),
                             "vector": pa.array([[1, 2, 3, 4], [5, 6, 7, 8]], F32x4),
                             "payload": pa.array(['{"a": 1}', None])})
    for location, fmt in _writers(tmp_path):
        with vecferry.open_writer(location, SCHEMA, format=fmt) as writer:
            writer.write_batch(batch)
        with vecferry.open_reader(location) as reader:
            got = pa.Table.from_batches(list(reader.batches(10))).to_pylist()
        assert [p["id"] for p in got] == [1, 2], location
    # a batch of the schema itself is passed on as it is (the pipeline's batches)
    own = pa.RecordBatch.from_arrays(batch.columns, schema=SCHEMA)
    assert check_batch(own, SCHEMA) is own


# ------------------------------------------------------------------ a writer's life cycle


def _closing_writers(tmp_path: Path) -> list[tuple[str, str | None]]:
    return [w for w in _writers(tmp_path) if not w[0].startswith("qdrant")]


def test_close_inside_the_with_block_is_not_run_again(tmp_path: Path) -> None:
    for location, fmt in _closing_writers(tmp_path):
        with vecferry.open_writer(location, SCHEMA, format=fmt) as writer:
            writer.write_batch(_batch())
            first = writer.close()
        assert writer.close() == first, location  # the first close's summary, again
        writer.abort()  # after close: nothing removed
        assert Path(location).exists(), location
        with vecferry.open_reader(location) as reader:
            assert sum(b.num_rows for b in reader.batches(10)) == 2, location


def test_write_batch_after_close_or_abort_is_refused(tmp_path: Path) -> None:
    (tmp_path / "closed").mkdir()
    (tmp_path / "aborted").mkdir()
    for (location, fmt), (other, _) in zip(_closing_writers(tmp_path / "closed"),
                                           _closing_writers(tmp_path / "aborted"), strict=True):
        writer = vecferry.open_writer(location, SCHEMA, format=fmt)
        writer.write_batch(_batch())
        writer.close()
        assert fails(UsageError, lambda w=writer: w.write_batch(_batch())) == (
            f"{location}: the writer is closed (close() completed its output; open a new "
            "writer to write more, with overwrite=True to replace it)")
        writer = vecferry.open_writer(other, SCHEMA, format=fmt)
        writer.write_batch(_batch())
        writer.abort()
        assert fails(UsageError, lambda w=writer: w.write_batch(_batch())) == (
            f"{other}: the writer is closed (abort() removed what it wrote; open a new writer "
            "to write again)")
        assert fails(UsageError, lambda w=writer: w.close()) == (
            f"{other}: the writer is closed (abort() removed what it wrote: there is nothing "
            "to close)")
        writer.abort()
        assert not Path(other).exists(), other
    assert leftovers(tmp_path) == []
    assert list((tmp_path / "aborted").iterdir()) == []


def test_a_with_block_whose_close_fails_aborts(tmp_path: Path) -> None:
    # the output appears while the writer writes: close refuses to replace it, and the block
    # leaves no temporary behind
    location = tmp_path / "o.parquet"
    with pytest.raises(OutputExistsError), \
            vecferry.open_writer(str(location), SCHEMA) as writer:
        writer.write_batch(pa.RecordBatch.from_arrays(_batch().columns, schema=SCHEMA))
        location.write_text("someone else's")
    assert location.read_text() == "someone else's"
    assert leftovers(tmp_path) == []
    assert fails(UsageError, lambda: writer.write_batch(_batch())) == (
        f"{location}: the writer is closed (abort() removed what it wrote; open a new writer "
        "to write again)")


# --------------------------------------------------------------------- convert's arguments


@pytest.mark.parametrize(("options", "message"), [
    ({"overwrite": "no"}, "overwrite must be True or False, not 'no' (pass overwrite=True or "
                          "overwrite=False)"),
    ({"overwrite": 1}, "overwrite must be True or False, not 1 (pass overwrite=True or "
                       "overwrite=False)"),
    ({"resume": "yes"}, "resume must be True or False, not 'yes' (pass resume=True or "
                        "resume=False)"),
    ({"check_duplicates": None}, "check_duplicates must be True or False, not None (pass "
                                 "check_duplicates=True or check_duplicates=False)"),
    ({"dry_run": "false"}, "dry_run must be True or False, not 'false' (pass dry_run=True or "
                           "dry_run=False)"),
    ({"batch_size": "100"}, "batch_size must be a positive integer, not '100' (the default is "
                            "2048)"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer, not 2.5 (the default is 2048)"),
    ({"batch_size": True}, "batch_size must be a positive integer, not True (the default is "
                           "2048)"),
    ({"batch_size": 0}, "batch_size must be a positive integer, not 0 (the default is 2048)"),
    ({"limit": "5"}, "limit must be a non-negative integer or None, not '5' (None (the default) "
                     "converts every point)"),
    ({"limit": -1}, "limit must be a non-negative integer or None, not -1 (None (the default) "
                    "converts every point)"),
    ({"reader_options": ["ids.npy"]}, "reader_options must be a dict of option names to "
                                      'values, or None, not list (e.g. reader_options='
                                      '{"id_kind": "mixed"})'),
    ({"writer_options": "distance=Cosine"}, "writer_options must be a dict of option names to "
                                            'values, or None, not str (e.g. writer_options='
                                            '{"distance": "Cosine"})'),
])
def test_convert_checks_its_arguments(tmp_path: Path, options: dict[str, Any],
                                      message: str) -> None:
    src = _npy(tmp_path / "v.npy")
    out = tmp_path / "out.jsonl"
    out.write_text("kept\n")
    text = fails(UsageError, lambda: vecferry.convert(src, str(out), **options))
    assert text == message
    assert out.read_text() == "kept\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "v.npy"]


# ------------------------------------------------------------ hints that name working forms


@pytest.mark.filterwarnings("ignore::vecferry.errors.VecferryWarning")
def test_faiss_vector_hints_name_forms_that_work(tmp_path: Path) -> None:
    two = _jsonl(tmp_path / "two.jsonl", [
        {"id": i, "vector": {"a": [1.0, float(i)], "b": [2.0, float(i)]}} for i in range(3)])
    out = str(tmp_path / "o.faiss")
    with pytest.raises(UnsupportedError) as info:
        vecferry.convert(two, out)
    assert info.value.hint == ('choose one with --vector NAME (in Python: '
                               'writer_options={"vector": NAME})')
    assert vecferry.convert(two, out, writer_options={"vector": "a"})["written"] == 3

    mixed = _jsonl(tmp_path / "mixed.jsonl", [
        {"id": i, "vector": {"a": [1.0, float(i)], "s": {"indices": [0], "values": [1.0]}}}
        for i in range(3)])
    with pytest.raises(UnsupportedError) as info:
        vecferry.convert(mixed, str(tmp_path / "m.faiss"))
    assert info.value.hint == ('choose one dense vector with --vector NAME (in Python: '
                               'writer_options={"vector": NAME})')
    assert vecferry.convert(mixed, str(tmp_path / "m.faiss"),
                            writer_options={"vector": "a"})["written"] == 3


def test_faiss_distance_hint_names_a_form_that_works(tmp_path: Path) -> None:
    src = _npy(tmp_path / "v.npy")
    out = str(tmp_path / "o.faiss")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VecferryWarning)
        report = vecferry.convert(src, out)
        assert report["warnings"] == [
            f"{out}: the stream has no distance; the index uses L2 (Euclid); pass --distance "
            'NAME (in Python: writer_options={"distance": NAME}) to choose']
        report = vecferry.convert(src, out, overwrite=True,
                                  writer_options={"distance": "Cosine"})
    assert report["warnings"] == [
        f"{out}: 6 vector(s) were not unit length and were normalized for the Cosine distance"]
    assert report["vectors"][0]["distance"] is None  # the source's; the index's is Cosine
    with vecferry.open_reader(out) as reader:
        assert reader.manifest.vectors[0].distance == "Cosine"


def test_faiss_big_id_hint_names_forms_that_work(tmp_path: Path) -> None:
    from vecferry.converters.faiss_index import BIG_ID_HINT

    big = 2**63 + 5
    src = tmp_path / "big.jsonl"
    src.write_text(f'{{"id": {big}, "vector": [1.0, 2.0]}}\n{{"id": 3, "vector": [1.0, 3.0]}}\n')
    assert BIG_ID_HINT == (
        'read a JSONL, mapped Parquet or VDF source with --id-kind mixed (in Python: '
        'reader_options={"id_kind": "mixed"}): its ids are then stored as 0..n-1 in the index, '
        "with the originals in its payload sidecar, and read back as they were; or use "
        '--on-error skip (on_error="skip") to leave such points in the rejects file')
    out = str(tmp_path / "o.faiss")
    assert vecferry.convert(str(src), out, reader_options={"id_kind": "mixed"})["written"] == 2
    report = vecferry.convert(str(src), out, overwrite=True, on_error="skip")
    assert (report["written"], report["rejected"]) == (1, 1)


# ---------------------------------------------------------------------------- verify


def test_verify_is_exported_and_takes_paths(tmp_path: Path) -> None:
    assert "verify" in vecferry.__all__
    importlib.import_module("vecferry.verification")  # the module beside the function
    from vecferry import verify

    assert verify is vecferry.verify and callable(verify)
    src = Path(_npy(tmp_path / "v.npy"))
    out = tmp_path / "o.parquet"
    vecferry.convert(src, out)
    report = verify(src, out, diff=tmp_path / "diff.jsonl")
    assert (report["ok"], report["verdict"]) == (True, "identical")
    assert vecferry.verify(out)["ok"] is True  # the file alone: its recorded digest


# -------------------------------------------------------------------------- warnings


def test_convert_issues_the_reports_warnings(tmp_path: Path) -> None:
    matrix = np.arange(24, dtype=np.float64).reshape(6, 4) / 3
    np.save(tmp_path / "v.npy", matrix)
    changed = int((matrix != matrix.astype(np.float32)).sum())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = vecferry.convert(tmp_path / "v.npy", tmp_path / "o.parquet")
    ours = [w for w in caught if issubclass(w.category, VecferryWarning)]
    assert [str(w.message) for w in ours] == report["warnings"] == [
        "float64 vectors are narrowed to float32 (Qdrant, FAISS and the stream store float32); "
        "the report counts values that changed",
        f"{changed} float64 value(s) changed when narrowed to float32"]
    assert {w.filename for w in ours} == {__file__}  # they point at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error", VecferryWarning)
        with pytest.raises(VecferryWarning):
            vecferry.convert(tmp_path / "v.npy", tmp_path / "o.parquet", overwrite=True)


def test_the_command_line_prints_each_warning_once(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from vecferry.cli import main

    np.save(tmp_path / "v.npy", np.arange(8, dtype=np.float64).reshape(2, 4) / 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, ["convert", str(tmp_path / "v.npy"),
                                           str(tmp_path / "o.parquet"), "--quiet"],
                                    catch_exceptions=False)
    assert result.exit_code == 0
    assert [w for w in caught if issubclass(w.category, VecferryWarning)] == []
    assert result.stderr == (
        "warning: float64 vectors are narrowed to float32 (Qdrant, FAISS and the stream store "
        "float32); the report counts values that changed\n"
        "warning: 5 float64 value(s) changed when narrowed to float32\n")
