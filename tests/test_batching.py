"""Batch boundaries: exact batch sizes, resume positions (``start``), ``limit``, ``rebatch``."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vecferry
from roundtrip import DATASETS, FORMATS, READERS, N, leftovers, read_points
from vecferry.stream import rebatch

BATCH_SIZES = [1, 5, 36, 37, 38, 1000]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """dense_int written once in every readable format: {name: (location, options)}."""
    ds = DATASETS["dense_int"]()
    base = tmp_path_factory.mktemp("batching")
    out = {}
    for name in READERS:
        fmt = FORMATS[name]
        if not fmt.missing() and not fmt.cannot_hold(ds):
            out[name] = fmt.make(ds, base, name.replace(".", "_"))
    return out


def _expected(reader, all_ids):
    """The ids in the order ``reader`` returns them (Qdrant returns points by id)."""
    return all_ids if FORMATS[reader].ordered else sorted(all_ids)


@pytest.fixture(scope="module")
def all_ids():
    return [p["id"] for p in DATASETS["dense_int"]().points]


def _batches(sources, name, batch_size, start=0):
    if name not in sources:
        pytest.skip(f"{name} is not installed or cannot hold the dataset")
    loc, options = sources[name]
    reader = vecferry.open_reader(loc, **options)
    try:
        return list(reader.batches(batch_size, start=start))
    finally:
        reader.close()


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("reader", READERS)
def test_every_batch_but_the_last_is_full(sources, all_ids, reader, batch_size):
    batches = _batches(sources, reader, batch_size)
    sizes = [b.num_rows for b in batches]
    assert sum(sizes) == N
    assert all(s == batch_size for s in sizes[:-1]), sizes
    assert 0 < sizes[-1] <= batch_size
    assert len(batches) == -(-N // batch_size)
    assert [i for b in batches for i in b.column("id").to_pylist()] == _expected(reader, all_ids)


@pytest.mark.parametrize("start", [0, 1, 5, 10, 36, 37, 50])
@pytest.mark.parametrize("reader", READERS)
def test_start_skips_exactly(sources, all_ids, reader, start):
    batches = _batches(sources, reader, 5, start=start)
    assert all(0 < b.num_rows <= 5 for b in batches)
    assert [i for b in batches for i in b.column("id").to_pylist()] == _expected(
        reader, all_ids)[start:]


@pytest.mark.parametrize("limit", [0, 1, 5, 36, 37, 38])
def test_limit_writes_the_first_points(sources, all_ids, tmp_path, limit):
    loc, _ = sources["jsonl"]
    out = str(tmp_path / "out.parquet")
    report = vecferry.convert(loc, out, batch_size=5, limit=limit)
    assert report["written"] == report["read"] == min(limit, N)
    _, points = read_points(out)
    assert [p["id"] for p in points] == all_ids[:limit]


def test_limit_with_npy_source_reports_the_limited_total(sources, tmp_path):
    loc, options = sources["npy-matrix"]

    class Bar:
        total = None
        n = 0

        def update(self, n):
            self.n += n

        def refresh(self):
            pass

    bar = Bar()
    report = vecferry.convert(loc, str(tmp_path / "o.jsonl"), limit=7, batch_size=3,
                              reader_options=options, progress=bar)
    assert (bar.total, bar.n, report["written"]) == (7, 7, 7)
    assert leftovers(tmp_path) == []


def test_parquet_with_many_row_groups_is_rebatched_by_the_pipeline(sources, tmp_path):
    loc, _ = sources["parquet-dir"]  # row_group_bytes=1: a row group per row
    import pyarrow.parquet as pq

    assert pq.ParquetFile(f"{loc}/part-00000.parquet").metadata.num_row_groups == N
    out = str(tmp_path / "out.npy")
    vecferry.convert(loc, out, batch_size=7)
    _, points = read_points(out, batch_size=7)
    assert len(points) == N


def _stream(lengths):
    start = 0
    for n in lengths:
        ids = pa.array(np.arange(start, start + n, dtype=np.uint64))
        yield pa.RecordBatch.from_arrays([ids], names=["id"])
        start += n


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=12), st.integers(1, 50))
def test_rebatch_cuts_exact_batches(lengths, size):
    out = list(rebatch(_stream(lengths), size))
    sizes = [b.num_rows for b in out]
    total = sum(lengths)
    assert sum(sizes) == total
    assert all(s == size for s in sizes[:-1])
    assert not sizes or 0 < sizes[-1] <= size
    assert [i for b in out for i in b.column("id").to_pylist()] == list(range(total))


def test_rebatch_refuses_a_non_positive_size():
    with pytest.raises(ValueError, match="batch size must be positive"):
        list(rebatch(_stream([3]), 0))


def test_jsonl_parse_chunks_are_bounded_by_text_as_well_as_lines(tmp_path, monkeypatch):
    import json

    from vecferry.converters import jsonl, open_reader

    monkeypatch.setattr(jsonl, "CHUNK_BYTES", 4096)
    src = tmp_path / "long.jsonl"
    lines = [json.dumps({"id": i, "vector": [i / 7] * 64}) for i in range(300)]  # ~1.2 kB each
    src.write_text("\n".join(lines) + "\n")
    reader = open_reader(str(src), format="jsonl")
    try:
        chunks = [chunk for _, _, chunk in reader._chunks(2048)]
    finally:
        reader.close()
    longest = max(len(line) for line in lines)
    assert len(chunks) > 50  # by lines alone, one chunk of 300
    assert all(sum(len(line) for _, line, _ in c) < 4096 + longest for c in chunks)
    assert [line.decode() for c in chunks for _, line, _ in c] == lines
    # and the points come through whole, in order, at the batch size asked for
    reader = open_reader(str(src), format="jsonl")
    try:
        batches = list(rebatch(reader.batches(128), 128))
    finally:
        reader.close()
    assert [b.num_rows for b in batches] == [128, 128, 44]
    assert pa.Table.from_batches(batches).column("id").to_pylist() == list(range(300))
