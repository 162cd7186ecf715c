"""More bad-input and failure paths, each driven through the public API (or the CLI) with real
files in ``tmp_path``: broken JSONL first lines, id kinds changing late, mappings naming what is
not there, corrupt Parquet pages (VDF, FAISS payload sidecars), a part directory manifest with a
bad part list, Qdrant local folders and Edge shards held by another handle, remote locations
without their packages, worker processes that die or re-run the script, and bad call arguments.

Messages are asserted as ``str(exc)`` (``"<location>: <message> (<hint>)"``). Where a message
carries a third-party library's text, the parts vecferry writes (location, its own words, the
hint) are asserted exactly around it.
"""

from __future__ import annotations

import json
import sys
import uuid
from multiprocessing import process
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import vecferry
from failing import fails
from vecferry.cli import main
from vecferry.errors import (
    InputError,
    MissingDependencyError,
    RecordError,
    TargetError,
    UnsupportedError,
    UsageError,
    VecferryError,
)
from vecferry.parallel import MAIN_GUARD, _guard_mark
from vecferry.stream import Manifest, VectorSpec


def _names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def _points(path: Path, n: int = 5) -> str:
    path.write_text("".join(json.dumps({"id": i, "vector": [0.5, 1.0, float(i)],
                                        "payload": {"i": i}}) + "\n" for i in range(n)))
    return str(path)


def _corrupt_first_page(p: Path) -> None:
    """Overwrite the first data page header: the footer stays readable, the data does not."""
    data = bytearray(p.read_bytes())
    data[4:36] = b"\xff" * 32
    p.write_bytes(bytes(data))


DECODE_HINT = " (the file may be truncated or corrupt)"


# ----------------------------------------------------------------------------------- JSONL


def _orjson_error(text: bytes) -> str:
    with pytest.raises(orjson.JSONDecodeError) as info:
        orjson.loads(text)
    return str(info.value)


NAN_HINT = ("write null or a number instead; Python's json.dumps writes NaN and Infinity "
            "unless given allow_nan=False")
FIRST_LINE_BROKEN = {
    "not_json": (b"{bad\n[1, 2]\n",
                 f"line 1: line is not valid JSON: {_orjson_error(b'{bad')} "
                 "(fix or remove the line)"),
    "cut_short": (b'{"id": 1, "vector": [1.0, 2',
                  "line 1: the last line is cut short (file truncated?) (the file may still be "
                  "downloading or was cut; re-create it)"),
    "nan": (b'{"id": 1, "vector": [NaN, 1.0]}\n',
            f"line 1, id 1: line holds NaN, which JSON cannot express ({NAN_HINT})"),
}


@pytest.mark.parametrize("case", sorted(FIRST_LINE_BROKEN))
def test_jsonl_without_a_valid_point_names_its_first_line(tmp_path, case):
    # no line parses as a point, so there is no schema: the first line's problem is the error
    content, message = FIRST_LINE_BROKEN[case]
    src = tmp_path / "p.jsonl"
    src.write_bytes(content)
    text = fails(RecordError, lambda: vecferry.convert(str(src), str(tmp_path / "o.parquet")))
    assert text == f"{src}, {message}"
    assert _names(tmp_path) == ["p.jsonl"]


@pytest.mark.parametrize(("case", "lines"), [("not_json", 2), ("cut_short", 1), ("nan", 1)])
def test_jsonl_without_a_valid_point_skipped_rejects_every_line(tmp_path, case, lines):
    # skipping, each line is a rejected record like any other: read == written + rejected
    content = FIRST_LINE_BROKEN[case][0]
    src = tmp_path / "p.jsonl"
    src.write_bytes(content)
    report = vecferry.convert(str(src), str(tmp_path / "o.parquet"), on_error="skip")
    assert (report["read"], report["written"], report["rejected"]) == (lines, 0, lines)
    rejects = [json.loads(line) for line in
               Path(report["rejects_file"]).read_text().splitlines()]
    assert len(rejects) == lines


def test_nan_in_a_line_read_exactly_for_its_long_integer(tmp_path):
    # a 21-digit integer sends the line to the exact (stdlib) parser, which refuses NaN itself
    src = tmp_path / "p.jsonl"
    src.write_text('{"id": 1, "vector": [1.0], "payload": {"big": 123456789012345678901, '
                   '"s": NaN}}\n{"id": 2, "vector": [1.0]}\n')
    with pytest.raises(RecordError) as info:
        vecferry.convert(str(src), str(tmp_path / "o.parquet"))
    assert str(info.value) == f"{src}, line 1, id 1: line holds NaN, which JSON cannot express " \
                              f"({NAN_HINT})"
    assert type(info.value.__cause__) is ValueError
    assert _names(tmp_path) == ["p.jsonl"]


@pytest.mark.parametrize(("content", "cls", "message"), [
    ('{"id": 1, "vector": []}\n{"id": 2, "vector": [1.0, 2.0]}\n', RecordError,
     ", line 1, id 1: vector has 0 dimensions, expected 2"),
    ('{"id": 1, "vector": "abc"}\n{"id": 2, "vector": [1.0, 2.0]}\n', RecordError,
     ", line 1, id 1: vector must be a list of numbers"),
    ('{"id": 1, "vector": []}\n', RecordError,
     ', line 1, id 1: vector is empty (a vector holds numbers: [0.1, 0.2, ...] (sparse: '
     '{"indices": [...], "values": [...]}, multi: [[...], [...]]))'),
], ids=["empty_then_sized", "string_then_sized", "only_empty"])
def test_a_vector_that_tells_no_size_is_passed_over_when_inferring(tmp_path, content, cls,
                                                                    message):
    src = tmp_path / "p.jsonl"
    src.write_text(content)
    text = fails(cls, lambda: vecferry.convert(str(src), str(tmp_path / "o.parquet")))
    assert text == f"{src}{message}"
    assert _names(tmp_path) == ["p.jsonl"]


def test_zst_input_without_zstandard_names_the_extra(tmp_path, monkeypatch):
    src = tmp_path / "p.jsonl.zst"
    src.write_bytes(b"never decompressed")
    monkeypatch.setitem(sys.modules, "zstandard", None)  # as if it were not installed
    text = fails(MissingDependencyError,
                  lambda: vecferry.convert(str(src), str(tmp_path / "o.parquet")))
    assert text == (f"{src}: reading or writing .zst files needs the zstandard package "
                    "(pip install 'vecferry[zstd]')")
    assert _names(tmp_path) == ["p.jsonl.zst"]


def test_zst_output_without_zstandard_leaves_nothing(tmp_path, monkeypatch):
    src = _points(tmp_path / "p.jsonl")
    dst = tmp_path / "o.jsonl.zst"
    monkeypatch.setitem(sys.modules, "zstandard", None)
    text = fails(MissingDependencyError, lambda: vecferry.convert(src, str(dst)))
    assert text == (f"{dst}: reading or writing .zst files needs the zstandard package "
                    "(pip install 'vecferry[zstd]')")
    assert _names(tmp_path) == ["p.jsonl"]


_LINES = b"".join(b'{"id": %d, "vector": [1.0, 2.0, %d.5]}\n' % (i, i) for i in range(30000))


def _zst(frames: int) -> bytes:
    zstandard = pytest.importorskip("zstandard")
    step = len(_LINES) // frames
    return b"".join(zstandard.ZstdCompressor(level=3).compress(_LINES[i:i + step])
                    for i in range(0, len(_LINES), step))


@pytest.mark.parametrize(("name", "damage", "error"), [
    # zstandard's own stream reader ends quietly at a cut: the file would read as a shorter one
    ("cut", lambda b: b[: len(b) // 2],
     "the zstd stream ends inside a frame: the file is cut short"),
    ("cut_last_frame", lambda b: b[:-7],
     "the zstd stream ends inside a frame: the file is cut short"),
    ("garbled_header", lambda b: b[:4] + b"\xff" * 64 + b[68:],
     "zstd: zstd decompressor error: Unsupported frame parameter"),
])
@pytest.mark.parametrize("frames", [1, 3])
def test_a_damaged_zst_file_is_named_not_read_short(tmp_path, name, damage, error, frames):
    src = tmp_path / "p.jsonl.zst"
    src.write_bytes(damage(_zst(frames)))
    text = fails(InputError, lambda: vecferry.convert(str(src), str(tmp_path / "o.parquet")))
    prefix = f"{src}: compressed stream is corrupt or truncated ("
    assert text.startswith(prefix)
    assert text.endswith(f" lines read before the error): {error} (re-create or re-download "
                         "the file)")
    assert _names(tmp_path) == ["p.jsonl.zst"]


def test_a_whole_multi_frame_zst_file_reads_every_line(tmp_path):
    src = tmp_path / "p.jsonl.zst"
    src.write_bytes(_zst(3))
    report = vecferry.convert(str(src), str(tmp_path / "o.jsonl"))
    assert report["written"] == 30000
    assert (tmp_path / "o.jsonl").read_bytes().count(b"\n") == 30000


def test_zst_output_carries_a_checksum(tmp_path):
    # without one, damaged data can decompress into other bytes unnoticed
    zstandard = pytest.importorskip("zstandard")
    dst = tmp_path / "o.jsonl.zst"
    vecferry.convert(_points(tmp_path / "p.jsonl"), str(dst))
    assert zstandard.get_frame_parameters(dst.read_bytes()).has_checksum


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_a_damaged_compressed_payload_sidecar(tmp_path, suffix):
    import gzip

    n = 3000
    np.save(tmp_path / "v.npy", np.ones((n, 3), dtype=np.float32))
    lines = b"".join(b'{"i": %d}\n' % i for i in range(n))
    data = gzip.compress(lines) if suffix.endswith(".gz") else _zst_of(lines)
    payloads = tmp_path / f"p{suffix}"
    payloads.write_bytes(data[: len(data) // 2])
    text = fails(InputError, lambda: vecferry.convert(
        str(tmp_path / "v.npy"), str(tmp_path / "o.jsonl"),
        reader_options={"payloads": str(payloads)}))
    assert text.startswith(f"{payloads}: compressed stream is corrupt or truncated (")
    assert text.endswith("(re-create or re-download the file)")
    assert not (tmp_path / "o.jsonl").exists()


def _zst_of(data: bytes) -> bytes:
    return pytest.importorskip("zstandard").ZstdCompressor(level=3).compress(data)


# ------------------------------------------------------------- ids changing after the peek


def _late_id(tmp_path: Path, kind: str) -> tuple[Path, Any, str]:
    """1100 points whose id kind changes at line 1051, after the lines the schema is read from:
    (file, the odd id, the reason it is refused)."""
    if kind == "int_after_strings":
        ids: list[Any] = [f"s{i}" for i in range(1100)]
        odd, reason = 7, "id 7 is an integer but the ids before it are strings"
    else:
        ids = [str(uuid.UUID(int=i + 1)) for i in range(1100)]
        odd, reason = "abc", "id 'abc' is not a UUID but the ids before it are UUIDs"
    ids[1050] = odd
    path = tmp_path / f"{kind}.jsonl"
    path.write_text("".join(json.dumps({"id": i, "vector": [1.0, 2.0]}) + "\n" for i in ids))
    return path, odd, reason


@pytest.mark.parametrize("kind", ["int_after_strings", "non_uuid_after_uuids"])
def test_an_id_of_another_kind_after_the_peek_goes_to_the_rejects(tmp_path, kind):
    src, odd, reason = _late_id(tmp_path, kind)
    rejects = tmp_path / "rejects.jsonl"
    report = vecferry.convert(str(src), str(tmp_path / "o.parquet"), on_error="skip",
                              rejects=str(rejects))
    assert (report["read"], report["written"], report["rejected"]) == (1100, 1099, 1)
    (line,) = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert line["id"] == odd
    assert line["_vecferry_reject"] == {"reason": reason, "source": str(src), "line": 1051,
                                        "point_id": odd}


@pytest.mark.parametrize(("kind", "odd", "hint", "kinds_that_work"), [
    ("non_uuid_after_uuids", "'abc'", "pass --id-kind string (or mixed) to read UUIDs and other "
     "strings together", ["string", "mixed"]),
    ("int_after_strings", "7", "pass --id-kind mixed to read integer and string ids together",
     ["mixed"]),
])
def test_an_id_of_another_kind_fails_the_run_with_advice_that_works(tmp_path, kind, odd, hint,
                                                                    kinds_that_work):
    src, _, reason = _late_id(tmp_path, kind)
    text = fails(RecordError, lambda: vecferry.convert(str(src), str(tmp_path / "o.parquet")))
    assert text == f"{src}, line 1051, id {odd}: {reason} ({hint})"
    assert _names(tmp_path) == [src.name]
    for id_kind in kinds_that_work:  # the advice, taken, reads every point
        report = vecferry.convert(str(src), str(tmp_path / f"{id_kind}.parquet"),
                                  reader_options={"id_kind": id_kind})
        assert report["written"] == 1100


# ---------------------------------------------------------------------------------- mappings


SUGGEST = "(check the spelling; `vecferry inspect FILE` suggests a mapping)"


def test_json_columns_naming_a_missing_column(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"title": ["a", "b"],
                             "emb": pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float32())),
                             "meta": ['{"a": 1}', '{"b": 2}']}), path)
    text = fails(UsageError, lambda: vecferry.open_reader(str(path), vector_column="emb",
                                                          json_columns="metadata"))
    assert text == (f"{path}: --json-columns names column 'metadata', which is not there "
                    f"(columns: title, emb, meta) {SUGGEST}")


@pytest.mark.parametrize(("options", "flag", "key"), [
    ({"id_key": "id"}, "--id-key", "id"),
    ({"id_key": "doc_id", "payload_key": "payload"}, "--payload-key", "payload"),
])
def test_a_key_mapping_naming_a_missing_key(tmp_path, options, flag, key):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"doc_id": i, "embedding": [0.5] * 4, "meta": {"i": i}})
                            + "\n" for i in range(3)))
    text = fails(UsageError, lambda: vecferry.open_reader(str(path), vector_key="embedding",
                                                          **options))
    assert text == (f"{path}: {flag} names key {key!r}, which is not there "
                    f"(keys: doc_id, embedding, meta) {SUGGEST}")


# ---------------------------------------------------------------- part directories, VDF


@pytest.mark.parametrize("parts", ["part-00000.parquet", {"name": "part-00000.parquet"},
                                   [{"count": 5}], [1], [{"name": 3}]],
                         ids=["string", "object", "no_name", "number", "name_not_string"])
def test_part_directory_manifest_with_a_bad_part_list(tmp_path, parts):
    d = tmp_path / "parts"
    vecferry.convert(_points(tmp_path / "src.jsonl"), str(d) + "/", to_format="parquet")
    manifest = json.loads((d / "_manifest.json").read_text())
    manifest["parts"] = parts
    (d / "_manifest.json").write_text(json.dumps(manifest))
    text = fails(InputError, lambda: vecferry.open_reader(str(d), format="parquet"))
    assert text == (f"{d / '_manifest.json'}: directory manifest is not valid: 'parts' must be a "
                    "list of {name, count, digest, bytes} (fix or delete _manifest.json)")


# the first column's page is the one broken: the payload's is read with the batches; the id's
# and the vector's already when the folder is opened, to learn the vectors and the id kind
@pytest.mark.parametrize("first", ["title", "id", "vector"])
def test_vdf_page_that_cannot_be_decoded(tmp_path, first):
    root = tmp_path / "export"
    (root / "data").mkdir(parents=True)
    part = root / "data" / "1.parquet"
    columns = {
        "title": pa.array([f"t{i}" for i in range(5)]),
        "id": pa.array([f"doc{i}" for i in range(5)]),
        "vector": pa.array(np.ones((5, 4)).tolist(), pa.list_(pa.float32())),
    }
    order = [first, *(c for c in columns if c != first)]
    pq.write_table(pa.table({c: columns[c] for c in order}), part, compression="none")
    (root / "VDF_META.json").write_text(json.dumps({
        "version": "0.1.300", "exported_from": "qdrant", "indexes": {"docs": [{
            "namespace": "", "index_name": "docs", "dimensions": 4,
            "vector_columns": ["vector"], "data_path": "data", "metric": "Cosine"}]}}))
    _corrupt_first_page(part)
    text = fails(InputError, lambda: vecferry.convert(str(root), str(tmp_path / "o.jsonl")))
    assert text.startswith(f"{part}: cannot decode Parquet data: ")
    assert text.endswith(DECODE_HINT)
    assert _names(tmp_path) == ["export"]


# ------------------------------------------------------------------------------------ FAISS


def test_faiss_payload_sidecar_data_that_cannot_be_decoded(tmp_path):
    pytest.importorskip("faiss")
    src = tmp_path / "p.jsonl"
    # string ids: the index holds 0..n-1 and the sidecar the ids and payloads
    src.write_text("".join(json.dumps({"id": f"s{i}", "vector": [0.5, 1.0, float(i)],
                                       "payload": {"i": i, "t": "x" * 50}}) + "\n"
                           for i in range(50)))
    index = tmp_path / "o.faiss"
    vecferry.convert(str(src), str(index))
    side = tmp_path / "o.faiss.payloads.parquet"
    _corrupt_first_page(side)
    reader = vecferry.open_reader(str(index))  # only the sidecar's footer is read here
    try:
        text = fails(InputError, lambda: [None for _ in reader.batches(16)])
    finally:
        reader.close()
    assert text.startswith(f"{side}: cannot read the payload sidecar: ")
    assert text.endswith(" (delete or fix it; it was written next to the index)")


def test_faiss_reader_batch_size_must_be_positive(tmp_path):
    faiss = pytest.importorskip("faiss")
    index = faiss.IndexFlatL2(4)
    index.add(np.ones((3, 4), dtype=np.float32))
    path = tmp_path / "i.faiss"
    faiss.write_index(index, str(path))
    reader = vecferry.open_reader(str(path))
    try:
        text = fails(UsageError, lambda: next(reader.batches(0)))
    finally:
        reader.close()
    assert text == "batch size must be positive"


# ----------------------------------------------------------------------------------- Qdrant


def test_a_local_mode_folder_another_client_holds_cannot_be_opened(tmp_path):
    qdrant_client = pytest.importorskip("qdrant_client")
    folder = tmp_path / "q"
    src = _points(tmp_path / "p.jsonl")
    vecferry.convert(src, f"qdrant-local://{folder}/docs", workers=1)
    other = qdrant_client.QdrantClient(path=str(folder))  # not vecferry's: a lock of its own
    try:
        text = fails(TargetError, lambda: vecferry.convert(
            src, f"qdrant-local://{folder}/more", workers=1))
        as_source = fails(InputError, lambda: vecferry.open_reader(
            f"qdrant-local://{folder}/docs"))
    finally:
        other.close()
    for t in (text, as_source):
        assert t.startswith(f"{folder}: cannot open the local-mode folder: ")
        assert "already accessed by another instance of Qdrant client" in t
        assert t.endswith(" (another process has it open; local mode allows one)")
    # once the other client is gone, the same conversion runs
    assert vecferry.convert(src, f"qdrant-local://{folder}/more", workers=1)["written"] == 5


@pytest.mark.parametrize(("name", "reason"), [
    ("a:b", "Collection name cannot contain ':' char"),
    ("..", "Collection name cannot be '..'"),
])
def test_a_collection_name_local_mode_refuses(tmp_path, name, reason):
    pytest.importorskip("qdrant_client")
    dst = f"qdrant-local://{tmp_path / 'q'}/{name}"
    text = fails(TargetError, lambda: vecferry.convert(_points(tmp_path / "p.jsonl"), dst,
                                                        workers=1))
    assert text == f"{dst}: cannot create the collection: {reason}"


def test_an_edge_shard_another_handle_holds_cannot_be_opened(tmp_path):
    qe = pytest.importorskip("qdrant_edge")
    shard = tmp_path / "shard"
    loc = f"qdrant-edge://{shard}"
    vecferry.convert(_points(tmp_path / "p.jsonl"), loc, workers=1)
    held = qe.EdgeShard.load(str(shard))  # as another process holding the shard would
    try:
        # as a source: an InputError; as a target: a TargetError
        text = fails(InputError, lambda: vecferry.convert(loc, str(tmp_path / "o.jsonl"),
                                                           workers=1))
        again = fails(TargetError, lambda: vecferry.convert(
            _points(tmp_path / "q.jsonl"), loc, workers=1))
    finally:
        held.close()
    for t in (text, again):
        assert t.startswith(f"{loc}: cannot open the shard: ")
        assert t.endswith(" (another process has it open; Edge allows one at a time)")
    assert not (tmp_path / "o.jsonl").exists()
    assert vecferry.convert(loc, str(tmp_path / "o.jsonl"), workers=1)["written"] == 5


def test_an_edge_shard_being_read_is_not_dropped(tmp_path):
    pytest.importorskip("qdrant_edge")
    shard = tmp_path / "shard"
    loc = f"qdrant-edge://{shard}"
    src = _points(tmp_path / "p.jsonl")
    vecferry.convert(src, loc, workers=1)
    reader = vecferry.open_reader(loc)
    try:
        text = fails(TargetError, lambda: vecferry.convert(src, loc, overwrite=True, workers=1))
        assert sum(b.num_rows for b in reader.batches(2)) == 5  # still whole, still readable
    finally:
        reader.close()
    assert text == (f"{loc}: cannot drop a shard this process is also reading (close the reader "
                    "of this shard first, or write to another shard)")


def test_an_edge_shard_with_a_damaged_file_says_so(tmp_path):
    pytest.importorskip("qdrant_edge")
    shard = tmp_path / "shard"
    loc = f"qdrant-edge://{shard}"
    vecferry.convert(_points(tmp_path / "p.jsonl"), loc, workers=1)
    (version,) = shard.glob("segments/*/version.info")
    version.write_text("not a version")
    text = fails(InputError, lambda: vecferry.convert(loc, str(tmp_path / "o.jsonl"),
                                                       workers=1))
    assert text.startswith(f"{loc}: cannot open the shard: ")
    assert "version.info" in text
    assert text.endswith(" (the shard's files are damaged or incomplete; restore it from a copy "
                         "or a snapshot)")
    assert not (tmp_path / "o.jsonl").exists()


def test_a_local_mode_location_that_is_a_file(tmp_path):
    folder = tmp_path / "data"
    folder.write_text("not a folder")
    hint = ("(name the folder QdrantClient(path=...) opens, then the collection: "
            "qdrant-local://FOLDER/COLLECTION)")
    text = fails(InputError, lambda: vecferry.open_reader(f"qdrant-local://{folder}/docs"))
    assert text == f"{folder}: this is a file, not a local-mode folder {hint}"
    text = fails(UsageError, lambda: vecferry.convert(_points(tmp_path / "p.jsonl"),
                                                       f"qdrant-local://{folder}/docs"))
    assert text == f"{folder}: this is a file, not a local-mode folder {hint}"
    assert folder.read_text() == "not a folder"


# -------------------------------------------------------------------------- remote storage


def test_a_fortran_ordered_npy_cannot_be_read_by_rows_remotely(tmp_path, http_dir):
    pytest.importorskip("aiohttp")
    root, base = http_dir
    np.save(root / "f.npy", np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)))
    url = f"{base}/f.npy"
    text = fails(UnsupportedError, lambda: vecferry.convert(url, str(tmp_path / "o.parquet")))
    assert text == (f"{url}: a Fortran-ordered matrix cannot be read by rows from object "
                    "storage (save it with np.ascontiguousarray, or copy it locally)")
    assert _names(tmp_path) == ["www"]


def test_a_server_that_ignores_range_requests_is_named(tmp_path, http_dir):
    # Python's own http.server answers a ranged GET with the whole file
    pytest.importorskip("aiohttp")
    root, base = http_dir
    np.save(root / "m.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    url = f"{base}/m.npy"
    text = fails(InputError, lambda: vecferry.convert(url, str(tmp_path / "o.parquet")))
    assert text == (f"{url}: the server ignored a byte-range request (asked for 48 bytes from "
                    "byte 128, got 176) (serve the file from a server that supports HTTP range "
                    "requests, or download it first)")
    assert _names(tmp_path) == ["www"]


def test_remote_location_without_fsspec(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "fsspec", None)
    monkeypatch.setitem(sys.modules, "fsspec.core", None)
    loc = "s3://bucket/x.parquet"
    text = fails(MissingDependencyError,
                  lambda: vecferry.convert(loc, str(tmp_path / "o.jsonl")))
    assert text == (f"{loc}: s3:// locations need fsspec, which is not installed "
                    "(pip install 'vecferry[s3]')")


def test_remote_location_without_its_provider_package(tmp_path, monkeypatch):
    pytest.importorskip("fsspec")
    monkeypatch.setitem(sys.modules, "gcsfs", None)
    imported = sys.modules["fsspec.registry"]._registry
    for key in ("gs", "gcs"):  # a class fsspec already imported would be used as is
        monkeypatch.delitem(imported, key, raising=False)
    loc = "gs://bucket/x.parquet"
    text = fails(MissingDependencyError,
                  lambda: vecferry.convert(loc, str(tmp_path / "o.jsonl")))
    assert text == (f"{loc}: gs:// locations need gcsfs, which is not installed "
                    "(pip install 'vecferry[gcs]')")


def test_a_storage_option_the_provider_refuses_exits_2(tmp_path):
    pytest.importorskip("s3fs")
    loc = "s3://bucket/x.parquet"
    result = CliRunner().invoke(main, ["convert", loc, str(tmp_path / "o.jsonl"), "--quiet",
                                       "--storage-option", "max_concurrency=0"])
    assert result.exit_code == 2, result.output
    assert result.stderr == (f"error: {loc}: bad storage options for s3://: max_concurrency "
                             "must be >= 1 (check the --storage-option keys)\n")
    assert _names(tmp_path) == []


# ------------------------------------------------------------------------ worker processes


def _schema() -> pa.Schema:
    return Manifest(vectors=[VectorSpec("", size=3, distance="Dot")]).schema()


@pytest.mark.parametrize("call", ["convert", "open_reader", "open_writer"])
def test_a_call_while_a_worker_process_starts_is_refused(tmp_path, monkeypatch, call):
    # a worker process started by forkserver or spawn runs the calling script again; a call
    # at the script's top level would start the whole conversion again in every worker
    src = _points(tmp_path / "p.jsonl")
    dst = str(tmp_path / "o.jsonl")
    action = {"convert": lambda: vecferry.convert(src, dst),
              "open_reader": lambda: vecferry.open_reader(src),
              "open_writer": lambda: vecferry.open_writer(dst, _schema())}[call]
    monkeypatch.setattr(process.current_process(), "_inheriting", True, raising=False)
    text = fails(UsageError, action)
    assert text == (f"vecferry.{call} was called while a vecferry worker process was starting, "
                    f"which runs the calling script again ({MAIN_GUARD})")
    assert _names(tmp_path) == ["p.jsonl"]
    # the worker leaves its run a mark, by which the run stops at once (test_scripts.py)
    mark = _guard_mark()
    assert mark.read_text() == f"vecferry.{call}"
    mark.unlink()


def test_a_worker_process_that_dies_is_named(tmp_path):
    # a worker killed by the kernel (out of memory) ends its task without a result
    from scaleout_faults import die
    from vecferry.parallel import OrderedPool

    pool = OrderedPool(1, [])
    try:
        text = fails(VecferryError, lambda: [*pool.submit(die, None, None), *pool.drain()])
    finally:
        pool.close(cancel=True)
    # not run from vecferry's own command line: the main-guard advice is added
    assert text == ("a vecferry worker process stopped without finishing its work (a killed "
                    f"process is often out of memory: check memory limits; {MAIN_GUARD})")


# ----------------------------------------------------------------------------------- verify


@pytest.mark.parametrize("memory_rows", [0, -1])
def test_verify_memory_rows_must_be_positive(tmp_path, memory_rows):
    from vecferry.verification import verify

    src = _points(tmp_path / "p.jsonl")
    text = fails(UsageError, lambda: verify(src, src, memory_rows=memory_rows))
    assert text == "memory_rows must be positive"


def test_a_collection_setting_of_the_wrong_type_is_named_in_one_line(tmp_path):
    pytest.importorskip("qdrant_client")
    dst = f"qdrant-local://{tmp_path / 'q'}/docs"
    text = fails(TargetError, lambda: vecferry.convert(
        _points(tmp_path / "p.jsonl"), dst, workers=1,
        writer_options={"collection_config": {"hnsw_config": {"m": "x"}}}))
    assert text == (f"{dst}: cannot create the collection: HnswConfigDiff: m: Input should "
                    "be a valid integer, unable to parse string as an integer")
