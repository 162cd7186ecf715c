"""Bad options, locations and inputs of the Qdrant, Qdrant Edge, mapping, stream and VDF code:
each refused with its exact message (and hint).

Messages are asserted as ``str(exc)`` (``"<location>: <message> (<hint>)"``) or, where the
message ends in a third-party library's text, as its exact start. Qdrant runs in qdrant-client's
local mode and in Qdrant Edge; server locations are only parsed (no server is contacted).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vecferry
from qdrant_helpers import make_local, source_points
from vecferry.errors import InputError, SchemaError, TargetError, UnsupportedError, UsageError
from vecferry.stream import MANIFEST_KEY, Manifest, VectorSpec, manifest_of
from vecferry.verification import verify

DIM = 4


def _schema(*vectors: VectorSpec) -> pa.Schema:
    return Manifest(vectors=list(vectors)).schema()


def _dense(name: str = "d", size: int = DIM, distance: str | None = "Dot") -> VectorSpec:
    return VectorSpec(name, size=size, distance=distance)


# ------------------------------------------------------------------------- Qdrant locations


def test_a_location_of_another_scheme_is_not_a_qdrant_location(tmp_path):
    loc = "http://db.example:6333/docs"
    with pytest.raises(UsageError) as info:
        vecferry.open_reader(loc, format="qdrant")
    assert str(info.value) == (f"{loc}: not a Qdrant location (use qdrant://HOST[:PORT]/"
                               "COLLECTION, qdrants://... or qdrant-local://PATH/COLLECTION)")


@pytest.mark.parametrize(("loc", "port"), [("qdrant://db.example:notaport/docs", "notaport"),
                                           ("qdrant://db.example:99999/docs", "99999"),
                                           ("qdrant://[::1]:-1/docs", "-1")])
def test_a_server_location_with_a_bad_port_is_refused(loc, port):
    with pytest.raises(UsageError) as info:
        vecferry.open_reader(loc)
    assert str(info.value) == (f"{loc}: port {port!r} is not a port number (0-65535) (e.g. "
                               "qdrant://localhost:6333/docs; leave the port out for Qdrant's "
                               "default (6333, or 6334 with ?grpc=1))")


def test_the_parent_of_a_local_mode_folder_must_exist(tmp_path):
    folder = tmp_path / "missing" / "data"
    with pytest.raises(UsageError) as info:
        vecferry.open_writer(f"qdrant-local://{folder}/docs", _schema(_dense()))
    assert str(info.value) == (f"{folder}: the parent of the local-mode folder does not exist "
                               "(create it first)")
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("timeout", [0, -1.5])
def test_timeout_must_be_positive(tmp_path, timeout):
    with pytest.raises(UsageError) as info:
        vecferry.open_reader(f"qdrant-local://{tmp_path}/docs", timeout=timeout)
    assert str(info.value) == f"--timeout must be a positive number of seconds, not {timeout:g}"


# ---------------------------------------------------------------------------- Qdrant reader


@pytest.fixture
def local_src(tmp_path: Path) -> str:
    return make_local(tmp_path / "src_data")


@pytest.mark.parametrize("page_size", [0, -3])
def test_page_size_must_be_positive(tmp_path, page_size):
    with pytest.raises(UsageError) as info:
        vecferry.open_reader(f"qdrant-local://{tmp_path}/docs", page_size=page_size)
    assert str(info.value) == f"--page-size must be a positive integer, not {page_size}"


@pytest.mark.parametrize("engine", ["local", "edge"])
@pytest.mark.parametrize("flt", ['["lang"]', "5", '"lang"', [{"key": "lang"}]])
def test_filter_must_be_a_json_object(tmp_path, local_src, engine, flt):
    loc = local_src
    if engine == "edge":
        loc = f"qdrant-edge://{tmp_path / 'shard'}"
        vecferry.convert(local_src, loc)
    with pytest.raises(UsageError) as info:
        vecferry.open_reader(loc, filter=flt)
    assert str(info.value) == "--filter must be a JSON object (a Qdrant filter)"


def test_filter_qdrant_does_not_accept_is_refused(local_src):
    with pytest.raises(UsageError) as info:
        vecferry.open_reader(local_src, filter='{"must": 5}')
    text = str(info.value)
    assert text.startswith("--filter is not a valid Qdrant filter: ")
    assert "must" in text[len("--filter is not a valid Qdrant filter: "):]


# ---------------------------------------------------------------------------- Qdrant writer


@pytest.mark.parametrize(("options", "message"), [
    ({"overwrite": True, "mode": "append"}, "--overwrite conflicts with --mode append"),
    ({"overwrite": True, "mode": "fail-if-exists"},
     "--overwrite conflicts with --mode fail-if-exists"),
    ({"mode": "sideways"}, "unknown mode 'sideways' (one of append, overwrite, fail-if-exists)"),
    ({"parallel": 0}, "--parallel must be a positive integer"),
    ({"parallel": -2}, "--parallel must be a positive integer"),
    ({"max_retries": -1}, "--max-retries must not be negative"),
    ({"batch_bytes": 1023}, "--batch-bytes must be at least 1024"),
])
@pytest.mark.parametrize("engine", ["local", "edge"])
def test_writer_options_are_checked_before_anything_is_written(tmp_path, engine, options,
                                                                message):
    dst = (f"qdrant-edge://{tmp_path / 'shard'}" if engine == "edge"
           else f"qdrant-local://{tmp_path / 'q'}/docs")
    with pytest.raises(UsageError) as info:
        vecferry.open_writer(dst, _schema(_dense()), **options)
    assert str(info.value) == message
    assert list(tmp_path.iterdir()) == []


def test_writer_options_through_convert(tmp_path, local_src):
    dst = f"qdrant-local://{tmp_path / 'q'}/docs"
    with pytest.raises(UsageError) as info:
        vecferry.convert(local_src, dst, writer_options={"batch_bytes": 10})
    assert str(info.value) == "--batch-bytes must be at least 1024"
    assert not (tmp_path / "q").exists()


def test_a_stream_without_vectors_cannot_make_an_edge_shard(tmp_path):
    # Qdrant servers and local mode take a collection without vectors; Edge does not
    dst = f"qdrant-edge://{tmp_path / 'shard'}"
    with pytest.raises(UnsupportedError) as info:
        vecferry.open_writer(dst, _schema())
    assert str(info.value) == (
        f"{dst}: the stream has no vectors (its points carry ids and payloads only); a Qdrant "
        "Edge shard needs at least one vector (load it into a Qdrant server or a "
        "qdrant-local:// folder, or write Parquet or JSONL)")
    assert list(tmp_path.iterdir()) == []


def test_a_distance_qdrant_lacks_is_refused(tmp_path):
    dst = f"qdrant-local://{tmp_path / 'q'}/docs"
    with pytest.raises(UnsupportedError) as info:
        vecferry.open_writer(dst, _schema(_dense("d", distance="Hamming")))
    assert str(info.value) == "vector 'd': Qdrant has no distance 'Hamming'"
    # the --distance option for a stream that does not say
    with pytest.raises(UnsupportedError) as info:
        vecferry.open_writer(dst, _schema(_dense("", distance=None)), distance="cosine")
    assert str(info.value) == "vector '': Qdrant has no distance 'cosine'"
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ Qdrant Edge


@pytest.mark.parametrize("loc", ["qdrant-edge://", "qdrant-edge:///"])
def test_an_edge_location_needs_a_path(loc):
    with pytest.raises(UsageError) as info:
        vecferry.open_reader(loc)
    assert str(info.value) == (f"{loc}: not a Qdrant Edge location (use qdrant-edge://PATH "
                               "(the shard directory))")


def test_an_edge_location_of_another_scheme_is_refused(tmp_path):
    loc = f"qdrant-local://{tmp_path}/docs"
    with pytest.raises(UsageError) as info:
        vecferry.open_reader(loc, format="qdrant-edge")
    assert str(info.value) == (f"{loc}: not a Qdrant Edge location (use qdrant-edge://PATH "
                               "(the shard directory))")


def test_the_parent_of_a_shard_directory_must_exist(tmp_path):
    shard = tmp_path / "missing" / "shard"
    with pytest.raises(UsageError) as info:
        vecferry.open_writer(f"qdrant-edge://{shard}", _schema(_dense()))
    assert str(info.value) == (f"qdrant-edge://{shard}: the parent of the shard directory "
                               "does not exist (create it first)")
    assert not (tmp_path / "missing").exists()


def test_a_shard_is_not_created_among_other_files(tmp_path):
    # Edge would put its files beside the user's, and a later --overwrite would delete them all
    home = tmp_path / "home"
    home.mkdir()
    for name in ("notes.txt", "b.txt", "c", "d", "e", "f"):
        (home / name).write_text("mine")
    with pytest.raises(UsageError) as info:
        vecferry.open_writer(f"qdrant-edge://{home}", _schema(_dense()))
    assert str(info.value) == (f"qdrant-edge://{home}: the directory is not a Qdrant Edge shard "
                               "and is not empty (it holds b.txt, c, d, e, f and 1 more) (name "
                               "a new or empty directory for the shard)")
    assert sorted(p.name for p in home.iterdir()) == ["b.txt", "c", "d", "e", "f", "notes.txt"]
    file = home / "notes.txt"
    with pytest.raises(UsageError) as info:
        vecferry.open_writer(f"qdrant-edge://{file}", _schema(_dense()))
    assert str(info.value) == (f"qdrant-edge://{file}: this is a file, not a shard directory "
                               "(name a new or empty directory for the shard)")
    assert file.read_text() == "mine"


def test_overwrite_keeps_a_shard_directory_that_holds_other_files(tmp_path, local_src):
    shard = tmp_path / "shard"
    empty = tmp_path / "empty"
    empty.mkdir()
    vecferry.convert(local_src, f"qdrant-edge://{empty}")  # an empty directory is taken
    vecferry.convert(local_src, f"qdrant-edge://{shard}")
    (shard / "notes.txt").write_text("mine")
    with pytest.raises(TargetError) as info:
        vecferry.convert(local_src, f"qdrant-edge://{shard}", overwrite=True)
    assert str(info.value) == (f"qdrant-edge://{shard}: the shard directory also holds files "
                               "that are not Qdrant Edge's: notes.txt (move those out, or delete "
                               "the directory yourself, then run again with --overwrite)")
    assert (shard / "notes.txt").read_text() == "mine"
    assert verify(local_src, f"qdrant-edge://{shard}", queries=0)["ok"] is True
    (shard / "notes.txt").unlink()
    report = vecferry.convert(local_src, f"qdrant-edge://{shard}", overwrite=True)
    assert report["written"] == len(source_points())


@pytest.fixture
def edge_src(tmp_path: Path, local_src: str) -> str:
    loc = f"qdrant-edge://{tmp_path / 'shard'}"
    vecferry.convert(local_src, loc)
    return loc


EDGE_FILTER_HINT = (
    "Qdrant Edge filters by match (value, text, text_any, phrase, prefix, substring, any, "
    "except), range, values_count, is_empty, is_null, has_id, has_vector, nested, combined "
    "with must, should, must_not and min_should; rewrite the filter with those, or copy "
    "without --filter and filter the copy")


@pytest.mark.parametrize(("flt", "message"), [
    ({"must": [{"nested": {"key": "nested", "filter": ["a"]}}]},
     'a filter must be an object: ["a"]'),
    ({"must": [], "filter": {}}, 'unknown filter clause(s) filter: {"must":[],"filter":{}}'),
    ({"must": [], "and": [], "or": []},
     'unknown filter clause(s) and, or: {"must":[],"and":[],"or":[]}'),
    ({"must": ["lang"]}, 'a filter condition must be an object: "lang"'),
    ({"should": [{"geo_radius": {"center": [0, 0]}}]},
     'condition not supported by Qdrant Edge: {"geo_radius":{"center":[0,0]}}'),
    ({"must": [{"key": "lang"}]}, 'condition not supported by Qdrant Edge: {"key":"lang"}'),
    ({"must": [{"key": "i", "geo_bounding_box": {}}]},
     'condition not supported by Qdrant Edge: {"key":"i","geo_bounding_box":{}}'),
    ({"must": [{"key": "lang", "match": {"fuzzy": "en"}}]},
     'match not supported by Qdrant Edge: {"fuzzy":"en"}'),
    ({"must": [{"key": "lang", "match": {"value": "en", "any": ["de"]}}]},
     'match not supported by Qdrant Edge: {"value":"en","any":["de"]}'),
    ({"must": [{"key": "lang", "match": {"value": ["en"]}}]},
     'match value takes a string, an integer or a boolean: {"value":["en"]}'),
    ({"must": [{"key": "lang", "match": {"text": 5}}]}, 'match text takes a string: {"text":5}'),
    ({"must": [{"key": "i", "match": {"any": [1.5]}}]},
     'match any takes a list of strings or of integers: {"any":[1.5]}'),
    ({"must": [{"key": "i", "range": {"gte": True}}]},
     'range takes gt, gte, lt and lte bounds: {"key":"i","range":{"gte":true}}'),
    ({"must": [{"key": "i", "range": {"from": 1}}]},
     'range takes gt, gte, lt and lte bounds: {"key":"i","range":{"from":1}}'),
    ({"must": [{"key": "t", "range": {"gte": "soon"}}]},
     "range bounds Qdrant Edge cannot take (failed to parse date-time: input contains invalid "
     'characters): {"key":"t","range":{"gte":"soon"}}'),
    ({"must": [{"key": "i", "values_count": {"gt": 1.5}}]},
     'values_count takes gt, gte, lt and lte bounds: {"key":"i","values_count":{"gt":1.5}}'),
    ({"must": [{"is_empty": "lang"}]},
     'is_empty takes an object with a payload key: {"is_empty":"lang"}'),
    ({"must": [{"is_null": {}}]}, 'is_null takes an object with a payload key: {"is_null":{}}'),
    ({"must": [{"nested": {"key": "n"}}]},
     'nested takes a key and a filter: {"nested":{"key":"n"}}'),
    ({"must": [{"has_id": 5}]}, 'has_id takes a list: {"has_id":5}'),
    ({"must": [{"has_id": [1, "x"]}]},
     'has_id holds "x", which is not a point id (an unsigned integer or a UUID): '
     '{"has_id":[1,"x"]}'),
    ({"must": [{"has_vector": 5}]}, 'has_vector takes a vector name: {"has_vector":5}'),
    ({"min_should": {"conditions": [{"is_null": {"key": "lang"}}]}},
     "min_should needs a list of conditions and an integer min_count: "
     '{"conditions":[{"is_null":{"key":"lang"}}]}'),
])
def test_edge_filters_it_cannot_express_are_refused(edge_src, flt, message):
    with pytest.raises(UsageError) as info:
        vecferry.open_reader(edge_src, filter=json.dumps(flt))
    assert str(info.value) == f"--filter: {message} ({EDGE_FILTER_HINT})"


@pytest.mark.parametrize("flt", [
    {"must": [{"key": "i", "range": {"gte": 2, "lt": None}}]},
    {"must": [{"has_id": [11, 22, "0b7d4c6e-8a3e-4a51-9d3d-6f0f4e8b2c11"]}]},
    {"min_should": {"conditions": [{"key": "lang", "match": {"value": "en"}},
                                   {"key": "lang", "match": {"value": "de"}}], "min_count": 1}},
    {"must": [{"key": "i", "values_count": {"gte": 1}}, {"key": "i", "range": {"lt": 2.5}}]},
])
def test_edge_filters_of_the_shapes_it_checks_still_open(local_src, edge_src, flt):
    # the checks that refuse the cases above must not refuse their well-formed neighbours, and
    # Edge must select what qdrant-client's own engine selects with the same filter
    counts = []
    for loc in (local_src, edge_src):
        reader = vecferry.open_reader(loc, filter=json.dumps(flt))
        try:
            counts.append(sum(b.num_rows for b in reader.batches(64)))
        finally:
            reader.close()
    assert counts[0] == counts[1]
    assert 0 < counts[0] < len(source_points())


# ------------------------------------------------------------------------ mapped Parquet


def _parquet(path: Path, **columns) -> str:
    n = len(next(iter(columns.values())))
    table = pa.table({"title": [f"t{i}" for i in range(n)], **columns})
    pq.write_table(table, path)
    return str(path)


def _vectors(n: int = 5) -> pa.Array:
    rng = np.random.default_rng(3)
    return pa.array(rng.standard_normal((n, DIM)).astype(np.float32).tolist(),
                    pa.list_(pa.float32()))


def _open_mapped(path: str, **options):
    return vecferry.open_reader(path, **options)


# "a" alone is named after its column once there are two vectors, and "a=b" names b "a"
@pytest.mark.parametrize(("columns", "name"), [(["v=a", "v=b"], "v"), (["a", "a=b"], "a")])
def test_a_vector_name_given_twice(tmp_path, columns, name):
    path = _parquet(tmp_path / "t.parquet", a=_vectors(), b=_vectors())
    with pytest.raises(UsageError) as info:
        _open_mapped(path, vector_column=columns)
    assert str(info.value) == (f"{path}: vector name(s) {name!r} given twice (name each vector "
                               "once: --vector-column or --sparse-column NAME=COLUMN)")


def test_binary_vectors_must_hold_whole_float32_values(tmp_path):
    rows = [bytes(range(6)) for _ in range(3)]
    for kind, col in (("fixed", pa.array(rows, pa.binary(6))),
                      ("variable", pa.array(rows, pa.binary()))):
        path = _parquet(tmp_path / f"{kind}.parquet", emb=col)
        with pytest.raises(SchemaError) as info:
            _open_mapped(path, vector_column="emb")
        assert str(info.value) == (f"{path}: column 'emb' holds 6 bytes per row, not a whole "
                                   "number of float32 values (binary vector columns must hold "
                                   "little-endian float32)")


@pytest.mark.parametrize(("col", "message"), [
    (pa.array(["0.1 0.2", "0.3 0.4"]), "column 'emb' has type string, which is not a vector"),
    (pa.array([1.5, 2.5]), "column 'emb' has type double, which is not a vector"),
    (pa.array([{"x": 1.0}, {"x": 2.0}]),
     "column 'emb' has type struct<x: double>, which is not a vector"),
])
def test_a_column_that_is_not_a_vector(tmp_path, col, message):
    path = _parquet(tmp_path / "t.parquet", emb=col)
    with pytest.raises(SchemaError) as info:
        _open_mapped(path, vector_column="emb")
    assert str(info.value) == (f"{path}: {message} (vector columns hold lists of numbers or "
                               "float32 bytes)")


@pytest.mark.parametrize(("col", "vt"), [
    (pa.array([["a", "b"], ["c", "d"]]), "string"),
    (pa.array([[True, False], [False, True]]), "bool"),
])
def test_a_list_column_of_non_numbers(tmp_path, col, vt):
    path = _parquet(tmp_path / "t.parquet", emb=col)
    with pytest.raises(SchemaError) as info:
        _open_mapped(path, vector_column="emb")
    assert str(info.value) == (f"{path}: column 'emb' holds lists of {vt}, not numbers (vector "
                               "columns hold lists of numbers or float32 bytes, multivectors "
                               "lists of fixed_size_list of numbers)")


@pytest.mark.parametrize("col", [
    pa.array([None, None, None], pa.list_(pa.float32())),
    pa.array([[], None, []], pa.list_(pa.float32())),
    pa.array([None, b"", None], pa.binary()),
])
def test_no_vector_in_any_row_to_tell_the_size(tmp_path, col):
    path = _parquet(tmp_path / "t.parquet", emb=col)
    with pytest.raises(InputError) as info:
        _open_mapped(path, vector_column="emb")
    assert str(info.value) == (f"{path}: column 'emb' holds no vector in any row (every cell is "
                               "null or empty), so its vector size is unknown (write the column "
                               "as fixed_size_list<float32>[size] (its type then gives the "
                               "size), or leave it out of --vector-column if it holds no "
                               "vectors)")


def test_a_mapping_without_a_vector_column(tmp_path):
    path = _parquet(tmp_path / "t.parquet", id=[1, 2, 3, 4, 5], emb=_vectors())
    with pytest.raises(UsageError) as info:
        _open_mapped(path, id_column="id")
    assert str(info.value) == (f"{path}: the mapping names no vector column (pass "
                               "--vector-column [NAME=]COLUMN; `vecferry inspect FILE` suggests "
                               "a mapping)")


MAPPED_PARQUET = [
    ({"emb": _vectors(), "kw": pa.array([{"indices": [1], "weights": [0.5]}] * 5)},
     {"vector_column": "emb", "sparse_column": "kw"}, SchemaError,
     "column 'kw' has type struct<indices: list<element: int64>, weights: list<element: "
     "double>>, not a sparse vector (sparse columns are struct<indices: list, values: list>)"),
    ({"emb": _vectors(), "meta": ['{"a": 1}'] * 5},
     {"vector_column": "emb", "payload_columns": "title", "json_columns": "meta"}, UsageError,
     "--json-columns names 'meta', which is not a payload column"),
    *(({"key": col, "emb": _vectors()}, {"id_column": "key", "vector_column": "emb"},
       SchemaError, f"id column 'key' has type {name}; ids are integers or strings (map "
       "another id column, or leave --id-column out to number rows)")
      for col, name in ((pa.array([1.0, 2.0, 3.0, 4.0, 5.0]), "double"),
                        (pa.array([True, False, True, False, True]), "bool"))),
    # binary ids are UUIDs when 16 bytes long (tests/test_mapping_checks.py)
    ({"key": pa.array([b"a", b"b", b"c", b"d", None]), "emb": _vectors()},
     {"id_column": "key", "vector_column": "emb"}, SchemaError,
     "id column 'key' has type binary, and none of its first values is 16 bytes long "
     "(lengths: 1); binary ids are read as 16-byte UUIDs (map another id column, or leave "
     "--id-column out to number rows)"),
]


@pytest.mark.parametrize(("columns", "options", "error", "message"), MAPPED_PARQUET)
def test_a_mapping_that_does_not_fit_the_columns(tmp_path, columns, options, error, message):
    path = _parquet(tmp_path / "t.parquet", **columns)
    with pytest.raises(error) as info:
        _open_mapped(path, **options)
    assert str(info.value) == f"{path}: {message}"


def test_an_unknown_id_kind_with_a_mapping(tmp_path):
    path = _parquet(tmp_path / "t.parquet", id=[1, 2, 3, 4, 5], emb=_vectors())
    with pytest.raises(UsageError) as info:
        _open_mapped(path, id_column="id", vector_column="emb", id_kind="number")
    assert str(info.value) == "unknown id kind 'number' (one of int, uuid, string, mixed)"


@pytest.mark.parametrize("kind", ["string", "uuid", "mixed"])
def test_row_number_ids_are_int(tmp_path, kind):
    path = _parquet(tmp_path / "t.parquet", emb=_vectors())
    with pytest.raises(UsageError) as info:
        _open_mapped(path, vector_column="emb", id_kind=kind)
    assert str(info.value) == (f"{path}: ids are row numbers (no id column), so the id kind "
                               "is int")


def test_a_sparse_column_that_cannot_be_cast(tmp_path):
    kw = pa.array([{"indices": [1, -5], "values": [0.5, 0.25]}] * 5,
                  pa.struct([("indices", pa.list_(pa.int64())),
                             ("values", pa.list_(pa.float64()))]))
    path = _parquet(tmp_path / "t.parquet", emb=_vectors(), kw=kw)
    out = tmp_path / "out.jsonl"
    with pytest.raises(SchemaError) as info:
        vecferry.convert(path, str(out), reader_options={"vector_column": "emb",
                                                          "sparse_column": "kw=kw"})
    text = str(info.value)
    start = (f"{path}: sparse column 'kw' cannot be read as uint32 indices and float32 "
             "values: ")
    assert text.startswith(start)
    assert text.endswith(" (indices must be integers in 0..2^32-1)")
    assert not out.exists()


def test_a_jsonl_key_mapping_without_a_vector_key(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"doc_id": i, "embedding": [0.5] * DIM}) + "\n"
                            for i in range(3)))
    with pytest.raises(UsageError) as info:
        vecferry.open_reader(str(path), id_key="doc_id")
    assert str(info.value) == (f"{path}: the mapping names no vector key (pass --vector-key "
                               "[NAME=]KEY; `vecferry inspect FILE` suggests a mapping)")


def test_a_jsonl_vector_name_given_twice(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"a": [0.5] * DIM, "b": [0.25] * DIM}) + "\n"
                            for _ in range(3)))
    with pytest.raises(UsageError) as info:
        vecferry.open_reader(str(path), vector_key=["v=a"], sparse_key=["v=b"])
    assert str(info.value) == (f"{path}: vector name(s) 'v' given twice (name each vector "
                               "once: --vector-key or --sparse-key NAME=KEY)")


# ------------------------------------------------------------------------ stream manifests


def _with_manifest(tmp_path: Path, change) -> str:
    """A vecferry Parquet file whose recorded manifest ``change`` edited (a dict -> None)."""
    path = tmp_path / "points.parquet"
    vecferry.convert(str(_jsonl_points(tmp_path)), str(path))
    meta = json.loads(pq.read_schema(path).metadata[MANIFEST_KEY])
    change(meta)
    table = pq.read_table(path)
    table = table.replace_schema_metadata({MANIFEST_KEY: json.dumps(meta).encode()})
    pq.write_table(table, path)
    return str(path)


def _jsonl_points(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": i, "vector": {"d": [i / 4] * DIM},
                                        "payload": {"i": i}}) + "\n" for i in range(3)))
    return path


def _set_vector(**values):
    def change(meta):
        meta["vectors"][0].update(values)
    return change


DAMAGED = " (the file's vecferry manifest metadata is damaged; export the file again)"


@pytest.mark.parametrize(("change", "message"), [
    (_set_vector(kind="ragged"), "vector 'd': unknown kind 'ragged'" + DAMAGED),
    (_set_vector(datatype="float64"),
     "vector 'd': unsupported datatype 'float64' (supported: float32, float16, uint8)"),
    (lambda m: m.update(id_kind="ulid"),
     "unknown id kind 'ulid' (one of int, uuid, string, mixed)"),
    (lambda m: m["vectors"].append(dict(m["vectors"][0])),
     "vector names repeat: ['d', 'd']" + DAMAGED),
    (lambda m: m.update(format_version=99),
     "manifest format version 99 is newer than this vecferry (1) (upgrade vecferry)"),
])
def test_a_recorded_manifest_that_is_not_valid(tmp_path, change, message):
    path = _with_manifest(tmp_path, change)
    with pytest.raises(SchemaError) as info:
        vecferry.open_reader(path)
    assert str(info.value) == f"{path}: {message}"


def test_no_vector_of_that_name():
    # reached only directly: verify's --vector is checked before (``_pick_vector``)
    manifest = Manifest(vectors=[_dense("a"), VectorSpec("kw", kind="sparse")])
    with pytest.raises(SchemaError) as info:
        manifest.vector("b")
    assert str(info.value) == "no vector named 'b'; vectors: ['a', 'kw']"


@pytest.mark.parametrize("target", ["out.parquet", "out.jsonl", "vdf_out"])
def test_a_writer_needs_a_schema_carrying_a_manifest(tmp_path, target):
    plain = pa.schema([("id", pa.uint64()), ("vector", pa.list_(pa.float32(), DIM))])
    fmt = "vdf" if target == "vdf_out" else None
    with pytest.raises(SchemaError) as info:
        vecferry.open_writer(str(tmp_path / target), plain, format=fmt)
    assert str(info.value) == "stream schema carries no vecferry manifest"
    with pytest.raises(SchemaError):
        manifest_of(plain.with_metadata({b"other": b"1"}))
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------- VDF


def _vdf(root: Path, files: dict[str, pa.Table], data_path: str = "data", **meta_extra) -> str:
    (root / "data").mkdir(parents=True)
    for name, table in files.items():
        pq.write_table(table, root / "data" / name)
    meta = {"version": "0.1.300", "exported_from": "qdrant", "indexes": {"docs": [{
        "namespace": "", "index_name": "docs", "dimensions": DIM, "vector_columns": ["vector"],
        "data_path": data_path, "metric": "Cosine"}]}, **meta_extra}
    (root / "VDF_META.json").write_text(json.dumps(meta))
    return str(root)


def _vdf_table(n: int = 5, size: int = DIM, ids: bool = True) -> pa.Table:
    cols = {"id": [f"doc{i}" for i in range(n)]} if ids else {}
    cols["vector"] = pa.array(np.ones((n, size)).tolist(), pa.list_(pa.float32()))
    cols["title"] = [f"t{i}" for i in range(n)]
    return pa.table(cols)


def test_a_folder_without_vdf_meta(tmp_path):
    with pytest.raises(InputError) as info:
        vecferry.open_reader(str(tmp_path), format="vdf")
    assert str(info.value) == (f"{tmp_path}: not a VDF folder: no VDF_META.json (a vector-io "
                               "export folder holds VDF_META.json and Parquet files)")


def test_vdf_meta_that_is_not_json(tmp_path):
    meta = tmp_path / "VDF_META.json"
    meta.write_text('{"indexes": ')
    with pytest.raises(InputError) as info:
        vecferry.open_reader(str(tmp_path))
    assert str(info.value).startswith(f"{meta}: VDF_META.json is not valid JSON: ")


@pytest.mark.parametrize("content", [{}, {"indexes": {}}, {"indexes": ["docs"]}, ["docs"],
                                     {"indexes": None}])
def test_vdf_meta_without_indexes(tmp_path, content):
    meta = tmp_path / "VDF_META.json"
    meta.write_text(json.dumps(content))
    with pytest.raises(InputError) as info:
        vecferry.open_reader(str(tmp_path))
    assert str(info.value) == (f"{meta}: VDF_META.json has no 'indexes' (it must map index "
                               "names to lists of namespaces)")


@pytest.mark.parametrize("data_path", ["elsewhere", "data/none.parquet"])
def test_a_data_path_naming_no_parquet(tmp_path, data_path):
    root = _vdf(tmp_path / "export", {"1.parquet": _vdf_table()}, data_path=data_path)
    with pytest.raises(InputError) as info:
        vecferry.open_reader(root)
    assert str(info.value) == (f"{root}/VDF_META.json: data_path {data_path!r} names no Parquet "
                               "file or folder of them (data_path is relative to the folder "
                               "holding VDF_META.json)")


def test_an_empty_data_folder_names_no_parquet(tmp_path):
    root = tmp_path / "export"
    _vdf(root, {})
    (root / "data" / "notes.txt").write_text("not parquet")
    with pytest.raises(InputError) as info:
        vecferry.open_reader(str(root))
    assert str(info.value) == (f"{root}/VDF_META.json: data_path 'data' names no Parquet file "
                               "or folder of them (data_path is relative to the folder holding "
                               "VDF_META.json)")


def test_a_later_file_without_the_id_column(tmp_path):
    root = _vdf(tmp_path / "export", {"1.parquet": _vdf_table(),
                                      "2.parquet": _vdf_table(ids=False)})
    out = tmp_path / "out.jsonl"
    with pytest.raises(InputError) as info:
        vecferry.convert(root, str(out))
    assert str(info.value) == (f"{root}/data/2.parquet: file has no id column 'id' but "
                               "1.parquet has")
    assert not out.exists()


def test_a_later_file_with_other_vectors(tmp_path):
    root = _vdf(tmp_path / "export", {"1.parquet": _vdf_table(),
                                      "2.parquet": _vdf_table(size=DIM + 2)})
    out = tmp_path / "out.jsonl"
    with pytest.raises(InputError) as info:
        vecferry.convert(root, str(out))
    assert str(info.value) == (
        f"{root}/data/2.parquet: this file holds the unnamed vector (dense, {DIM + 2} dims), but "
        f"1.parquet holds the unnamed vector (dense, {DIM} dims) (every file of a namespace "
        "holds the same vectors)")
    assert not out.exists()


def test_a_vector_named_id_cannot_be_written_to_vdf(tmp_path):
    out = tmp_path / "export"
    with pytest.raises(UnsupportedError) as info:
        vecferry.open_writer(str(out), _schema(_dense("id"), _dense("b")), format="vdf")
    assert str(info.value) == (f"{out}: a vector named 'id' would clash with the id column "
                               "(write Parquet or JSONL, which keep vectors apart from the id)")
    assert list(tmp_path.iterdir()) == []


VDF_CLASH_HINT = ("(VDF keeps payload keys as columns next to the id and vectors; rename the "
                  "key, or write Parquet or JSONL)")


@pytest.mark.parametrize(("payload_key", "vectors"), [
    ("id", {"d": [0.5] * DIM}),
    ("d", {"d": [0.5] * DIM, "e": [0.25] * DIM}),
    ("vector", [0.5] * DIM),
])
def test_a_payload_key_named_like_a_vdf_column(tmp_path, payload_key, vectors):
    # only point 5 holds the key, in the second batch: it is named, and nothing is written
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "vector": vectors, "payload": {
        payload_key if i == 5 else "k": i, "t": "x"}}) + "\n" for i in range(7)))
    out = tmp_path / "export"
    with pytest.raises(UnsupportedError) as info:
        vecferry.convert(str(src), str(out), to_format="vdf", batch_size=4)
    assert str(info.value) == (f"{out}, id 5: payload key {payload_key!r} has the name of the id "
                               f"or a vector column {VDF_CLASH_HINT}")
    assert list(tmp_path.iterdir()) == [src]


def test_a_vdf_column_name_inside_a_payload_value_is_kept(tmp_path):
    # the names appear in values and nested objects, not as top-level keys: nothing clashes
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "vector": [0.5] * DIM, "payload": {
        "t": "id", "meta": {"id": i, "vector": [1]}}}) + "\n" for i in range(3)))
    out = tmp_path / "export"
    vecferry.convert(str(src), str(out), to_format="vdf")
    back = vecferry.convert(str(out), str(tmp_path / "back.jsonl"), from_format="vdf")
    assert back["written"] == 3
    rows = [json.loads(line) for line in (tmp_path / "back.jsonl").read_text().splitlines()]
    assert [r["payload"] for r in rows] == [{"t": "id", "meta": {"id": i, "vector": [1]}}
                                            for i in range(3)]


def test_a_payload_key_spelled_with_escapes_is_still_refused(tmp_path):
    # "\u0069d" is "id": the text scan misses it, the check of the parsed keys does not
    schema = _schema(_dense(""))
    vec = pa.FixedSizeListArray.from_arrays(pa.array([0.5] * DIM * 2, pa.float32()), DIM)
    batch = pa.RecordBatch.from_arrays(
        [pa.array([1, 2], pa.uint64()), vec, pa.array(['{"\\u0069d": 1}', '{"k": 2}'])],
        schema=schema)
    out = tmp_path / "export"
    writer = vecferry.open_writer(str(out), schema, format="vdf")
    writer.write_batch(batch)
    with pytest.raises(UnsupportedError) as info:
        writer.close()
    writer.abort()
    assert str(info.value) == (f"{out}: payload key 'id' has the name of the id or a vector "
                               f"column {VDF_CLASH_HINT}")
    assert list(tmp_path.iterdir()) == []


def test_a_mistyped_filter_condition_is_named_in_one_line(local_src):
    """qdrant-client's models tried the condition as every kind it may be: 44 errors in 90
    lines, most about kinds nobody meant."""
    with pytest.raises(UsageError) as info:
        vecferry.open_reader(local_src,
                             filter='{"must": [{"key": "lang", "match": {"valu": "en"}}]}')
    assert str(info.value) == (
        "--filter is not a valid Qdrant filter: Filter: "
        "must.0.FieldCondition.match.MatchValue.value: Field required; "
        "must.0.FieldCondition.match.MatchValue.valu: Extra inputs are not permitted "
        "(and 42 problem(s) of other readings of it) (see Qdrant's filtering docs; e.g. "
        '{"must": [{"key": "lang", "match": {"value": "en"}}]})')
