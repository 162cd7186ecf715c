"""Bad-input paths of the file formats (numpy, Parquet, JSONL, part directories) and of the
pipeline's own checks: each built from real files in ``tmp_path``, each asserting its message.

Messages are asserted as ``str(exc)``: location first, then what is wrong, then the hint in
parentheses.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vecferry
from failing import fails, read_all
from vecferry.errors import InputError, RecordError, SchemaError, UnsupportedError, UsageError
from vecferry.stream import MANIFEST_KEY

F32 = np.float32


def _matrix(rows: int = 3, dim: int = 4, dtype: type = F32) -> np.ndarray:
    return np.arange(rows * dim, dtype=dtype).reshape(rows, dim)


def _jsonl(path: Path, n: int = 3) -> str:
    path.write_text("".join(json.dumps({"id": i, "vector": [0.5, 1.0, float(i)],
                                        "payload": {"i": i}}) + "\n" for i in range(n)))
    return str(path)


def _shards(d: Path, **arrays: np.ndarray) -> str:
    """A directory of ``.npy`` files named after the keywords (``emb_0`` -> ``emb_0.npy``)."""
    d.mkdir()
    for name, arr in arrays.items():
        np.save(d / f"{name}.npy", arr)
    return str(d)


# ------------------------------------------------------------------------------ numpy: .npz


def test_npz_fortran_ordered_vectors_are_refused(tmp_path):
    p = tmp_path / "f.npz"
    np.savez(p, vectors=np.asfortranarray(_matrix()))
    text = fails(UnsupportedError, lambda: vecferry.open_reader(str(p)))
    assert text == (f"{p}:vectors.npy: Fortran-ordered arrays inside .npz cannot be streamed "
                    "(save with np.ascontiguousarray, or as a plain .npy)")


def test_npz_member_cut_short_is_truncated(tmp_path):
    p = tmp_path / "t.npz"
    buf = io.BytesIO()
    np.save(buf, _matrix(4, 2))
    whole = buf.getvalue()
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("vectors.npy", whole[:-3 * 4])  # header says 4 rows; 2.5 rows of data
    text = fails(InputError, lambda: read_all(str(p)))
    assert text == f"{p}:vectors.npy: archive member is truncated"


def test_npz_that_is_not_a_zip(tmp_path):
    p = tmp_path / "bad.npz"
    p.write_bytes(b"this is no zip archive at all")
    text = fails(InputError, lambda: vecferry.open_reader(str(p)))
    assert text == f"{p}: not a valid .npz archive: File is not a zip file " \
                   "(the file may be truncated)"


def test_npz_vectors_must_be_2d(tmp_path):
    p = tmp_path / "flat.npz"
    np.savez(p, vectors=np.ones(4, dtype=F32))
    text = fails(InputError, lambda: vecferry.open_reader(str(p)))
    assert text == f"{p}: 'vectors' must be 2-D, found shape (4,)"


# ---------------------------------------------------------------- numpy: one matrix, its ids


def test_ids_option_with_a_shard_directory(tmp_path):
    d = _shards(tmp_path / "sh", emb_0=_matrix(), emb_1=_matrix())
    np.save(tmp_path / "ids.npy", np.arange(6, dtype=np.uint64))
    text = fails(UsageError, lambda: vecferry.open_reader(d, format="npy",
                                                          ids=str(tmp_path / "ids.npy")))
    assert text == (f"{d}: --ids and --payloads apply to one matrix; a directory of shards "
                    "takes ids and metadata per shard (ids_0.npy, metadata_0.parquet)")


def test_ids_file_holding_objects_is_not_readable(tmp_path):
    np.save(tmp_path / "vectors.npy", _matrix())
    ids = tmp_path / "ids.npy"
    np.save(ids, np.array(["a", 1, None], dtype=object), allow_pickle=True)
    text = fails(InputError, lambda: vecferry.open_reader(str(tmp_path / "vectors.npy"),
                                                          ids=str(ids)))
    assert text.startswith(f"{ids}: ids file is not a readable .npy array: ")
    assert "Python objects" in text
    assert text.endswith(" (ids must be a 1-D .npy of integers or unicode strings)")


def test_ids_file_must_be_1d(tmp_path):
    np.save(tmp_path / "vectors.npy", _matrix())
    ids = tmp_path / "ids.npy"
    np.save(ids, np.arange(3, dtype=np.uint64).reshape(3, 1))
    text = fails(InputError, lambda: vecferry.open_reader(str(tmp_path / "vectors.npy"),
                                                          ids=str(ids)))
    assert text == f"{ids}: ids must be 1-D, found shape (3, 1)"


def test_payloads_option_naming_a_directory_cannot_be_opened(tmp_path):
    np.save(tmp_path / "vectors.npy", _matrix())
    payloads = tmp_path / "payloads"
    payloads.mkdir()
    text = fails(InputError, lambda: vecferry.open_reader(str(tmp_path / "vectors.npy"),
                                                          payloads=str(payloads)))
    assert text == f"{payloads}: cannot open: Is a directory (check the path and permissions)"


def test_written_directory_with_a_broken_manifest(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    np.save(d / "vectors.npy", _matrix())
    (d / "manifest.json").write_bytes(b"{not json")
    text = fails(InputError, lambda: vecferry.open_reader(str(d), format="npy"))
    assert text.startswith(f"{d / 'manifest.json'}: manifest is not valid: ")


def test_numpy_writer_refuses_an_npz_name(tmp_path):
    src = _jsonl(tmp_path / "p.jsonl")
    dst = str(tmp_path / "out.npz")
    text = fails(UsageError, lambda: vecferry.convert(src, dst, to_format="npy"))
    assert text == (f"{dst}: the numpy writer writes a directory (vectors.npy, ids.npy, "
                    "payloads.jsonl, manifest.json), not an .npz archive "
                    "(give a directory name, e.g. out_dir)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]


# ------------------------------------------------------------ numpy: per-vector directories


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_directory_without_files_of_its_format(tmp_path, fmt):
    d = tmp_path / "empty"
    d.mkdir()
    (d / "notes.txt").write_text("nothing here")
    text = fails(InputError, lambda: vecferry.open_reader(str(d), format=fmt))
    assert text == f"{d}: directory holds no .{fmt} files"


def _per_vector(d: Path, *, broken: bytes | None = None, sidecar: bytes | None = None) -> Path:
    d.mkdir()
    np.save(d / "a.npy", np.ones(4, dtype=F32))
    if broken is not None:
        (d / "b.npy").write_bytes(broken)
    if sidecar is not None:
        (d / "a.json").write_bytes(sidecar)
    return d


def test_per_vector_file_that_is_not_npy(tmp_path):
    d = _per_vector(tmp_path / "pv", broken=b"garbage, not numpy")
    text = fails(RecordError, lambda: read_all(str(d), format="npy"))
    assert text.startswith(f"{d / 'b.npy'}, row 1, id 'b': not a readable .npy file: ")
    assert text.endswith(" (the file may be truncated; re-create it, or move it out of the "
                         "directory)")


@pytest.mark.parametrize(("sidecar", "message"), [
    (b'{"tag": ', "payload sidecar is not JSON: "),
    (b"[1, 2]", "payload sidecar must hold a JSON object"),
])
def test_per_vector_payload_sidecar(tmp_path, sidecar, message):
    d = _per_vector(tmp_path / "pv", sidecar=sidecar)
    text = fails(RecordError, lambda: read_all(str(d), format="npy"))
    hint = " (make the file one JSON object (or null), or delete it)"
    if message.endswith(": "):
        assert text.startswith(f"{d / 'a.json'}, row 0, id 'a': {message}")
        assert text.endswith(hint)
    else:
        assert text == f"{d / 'a.json'}, row 0, id 'a': {message}, not list{hint}"


# -------------------------------------------------------------------------- numpy: shards


def _shard_cases() -> list[tuple[str, dict[str, np.ndarray], Callable[[Path], set[str]]]]:
    m = _matrix()
    return [
        ("one_d_other", {"emb_0": m, "emb_1": m, "extra_0": np.ones(3, dtype=F32)},
         lambda d: {f"{d}: 1-D arrays extra_0.npy are neither vector matrices nor ids (a shard "
                    "directory holds (N, D) matrices, ids_<n>.npy and metadata_<n>.parquet; "
                    "move other files out)"}),
        ("two_id_groups", {"emb_0": m, "ids_0": np.arange(3, dtype=np.uint64),
                           "idents_0": np.arange(3, dtype=np.uint64)},
         lambda d: {f"{d}: several id groups: idents, ids (keep one ids_<n>.npy per shard)"}),
        ("group_missing_a_shard", {"img_emb_0": m, "img_emb_1": m, "text_emb_0": m},
         lambda d: {f"{d}: vector group 'text_emb' has no matrix for shard(s) 1 (img_emb_1.npy "
                    "has no 'text_emb' partner) (every shard needs a matrix in every group: add "
                    "the missing file, or move that shard's other files out)"}),
        ("first_group_missing_shards", {"a_0": m, "b_0": m, "b_2": m, "b_5": m},
         lambda d: {f"{d}: vector group 'a' has no matrix for shard(s) 2, 5 (b_2.npy has no "
                    "'a' partner) (every shard needs a matrix in every group: add the missing "
                    "file, or move that shard's other files out)"}),
        ("three_d_shard", {"emb_0": m, "emb_1": np.ones((3, 4, 2), dtype=F32)},
         lambda d: {f"{d / 'emb_1.npy'}: expected a 2-D matrix, found shape (3, 4, 2)"}),
        ("other_dimension", {"emb_0": m, "emb_1": _matrix(3, 5)},
         lambda d: {f"{d / 'emb_1.npy'}: shard is 5-dimensional float32 but emb_0.npy is "
                    "4-dimensional float32 (every shard holds vectors of one size and dtype)"}),
        ("other_dtype", {"emb_0": m, "emb_1": _matrix(dtype=np.float16)},
         lambda d: {f"{d / 'emb_1.npy'}: shard is 4-dimensional float16 but emb_0.npy is "
                    "4-dimensional float32 (every shard holds vectors of one size and dtype)"}),
        ("groups_disagree_on_rows", {"img_emb_0": m, "text_emb_0": _matrix(2)},
         lambda d: {f"{d / 'text_emb_0.npy'}: shard has 2 rows but img_emb_0.npy has 3 (the "
                    "matrices of one shard hold the same points, one row each)"}),
        ("ids_too_few", {"emb_0": m, "emb_1": m, "ids_0": np.arange(2, dtype=np.uint64),
                         "ids_1": np.arange(3, dtype=np.uint64)},
         lambda d: {f"{d / 'ids_0.npy'}: ids file has 2 rows but its shard emb_0.npy has 3 "
                    "(ids are matched to vectors by row)"}),
        ("negative_id", {"emb_0": m, "ids_0": np.array([4, -7, 9], dtype=np.int64)},
         lambda d: {f"{d / 'ids_0.npy'}, row 1: id -7 is negative (ids must be unsigned "
                    "integers, UUIDs or strings)"}),
    ]


SHARD_CASES = {name: (arrays, want) for name, arrays, want in _shard_cases()}


@pytest.mark.parametrize("name", sorted(SHARD_CASES))
def test_shard_directory_that_does_not_fit(tmp_path, name):
    arrays, want = SHARD_CASES[name]
    d = Path(_shards(tmp_path / "sh", **arrays))
    text = fails(InputError, lambda: vecferry.open_reader(str(d), format="npy"))
    assert text in want(d)


def test_shard_ids_of_float_dtype(tmp_path):
    d = Path(_shards(tmp_path / "sh", emb_0=_matrix(), ids_0=np.arange(3, dtype=np.float64)))
    text = fails(UnsupportedError, lambda: vecferry.open_reader(str(d), format="npy"))
    assert text == (f"{d / 'ids_0.npy'}: ids of dtype float64 are not supported (ids must be "
                    "unsigned integers or unicode strings)")


def test_shard_metadata_rows_must_match(tmp_path):
    d = Path(_shards(tmp_path / "sh", emb_0=_matrix()))
    pq.write_table(pa.table({"title": ["a", "b", "c", "d"]}), d / "metadata_0.parquet")
    text = fails(InputError, lambda: vecferry.open_reader(str(d), format="npy"))
    assert text == (f"{d / 'metadata_0.parquet'}: metadata file has 4 rows but its shard "
                    "emb_0.npy has 3 (metadata are matched to vectors by row)")


@pytest.mark.parametrize("names", [["metadata_0", "other_0"], ["metadata"]])
def test_shard_metadata_must_be_one_numbered_group(tmp_path, names):
    d = Path(_shards(tmp_path / "sh", emb_0=_matrix()))
    for name in names:
        pq.write_table(pa.table({"title": ["a", "b", "c"]}), d / f"{name}.parquet")
    text = fails(InputError, lambda: vecferry.open_reader(str(d), format="npy"))
    assert text == (f"{d}: metadata Parquet files must be one numbered group "
                    "(metadata_0.parquet, metadata_1.parquet, ...)")


# -------------------------------------------------------------------------------- Parquet


def _stream_table(vector: pa.Array, ids: pa.Array | None = None) -> pa.Table:
    n = len(vector)
    return pa.table({"id": ids if ids is not None else pa.array(range(n), type=pa.uint64()),
                     "vector": vector})


def _dense(n: int = 3, dim: int = 4, value_type: pa.DataType | None = None) -> pa.Array:
    flat = pa.array(np.arange(n * dim, dtype=np.float64), type=value_type or pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, dim)


def test_parquet_vector_values_of_float64(tmp_path):
    p = tmp_path / "v.parquet"
    pq.write_table(_stream_table(_dense(value_type=pa.float64())), p)
    # a file vecferry did not write (no manifest, not its vector type): read with a mapping
    text = fails(InputError, lambda: vecferry.open_reader(str(p)))
    assert text == (f"{p}: not a vecferry file: no manifest and column 'vector' has type "
                    "fixed_size_list<element: double>[4], which is not a vecferry vector type "
                    "(columns: id, vector) (read it with a mapping, e.g. --id-column id "
                    "--vector-column vector)")


def test_parquet_vector_column_of_no_vector_type(tmp_path):
    p = tmp_path / "v.parquet"
    pq.write_table(_stream_table(pa.array(["a", "b", "c"])), p)
    text = fails(SchemaError, lambda: vecferry.open_reader(str(p)))
    assert text == (f"{p}: column 'vector' has type string, which is not a vector type "
                    "(dense vectors must be fixed_size_list<float32>[dim])")


def test_parquet_with_ids_but_no_vector_column(tmp_path):
    p = tmp_path / "v.parquet"
    pq.write_table(pa.table({"id": pa.array([1, 2], type=pa.uint64()), "title": ["a", "b"]}), p)
    text = fails(InputError, lambda: vecferry.open_reader(str(p)))
    assert text == (f"{p}: no vector column (columns: id, title) "
                    "(name the vector column 'vector' or 'vector.<name>')")


def _vecferry_parquet(tmp_path: Path) -> Path:
    out = tmp_path / "made.parquet"
    vecferry.convert(_jsonl(tmp_path / "src.jsonl"), str(out))
    return out


def test_parquet_id_kind_with_a_manifest(tmp_path):
    p = _vecferry_parquet(tmp_path)
    text = fails(UsageError, lambda: vecferry.open_reader(str(p), id_kind="string"))
    assert text == (f"{p}: --id-kind does not apply to a file carrying a vecferry manifest "
                    "(it records the id kind)")


def test_parquet_manifest_metadata_not_json(tmp_path):
    p = tmp_path / "v.parquet"
    table = _stream_table(_dense()).replace_schema_metadata({MANIFEST_KEY: b"{broken"})
    pq.write_table(table, p)
    text = fails(InputError, lambda: vecferry.open_reader(str(p)))
    assert text.startswith(f"{p}: manifest metadata is not valid: ")


def test_parquet_manifest_names_missing_columns(tmp_path):
    made = _vecferry_parquet(tmp_path)
    table = pq.read_table(made)
    p = tmp_path / "cut.parquet"
    pq.write_table(table.drop_columns(["vector"]).replace_schema_metadata(
        table.schema.metadata), p)
    text = fails(InputError, lambda: vecferry.open_reader(str(p)))
    assert text == f"{p}: columns named in the manifest are missing: vector"


def test_parquet_parts_with_different_columns(tmp_path):
    d = tmp_path / "parts"
    d.mkdir()
    pq.write_table(_stream_table(_dense()), d / "a.parquet")
    pq.write_table(_stream_table(_dense()).append_column("payload", pa.array(["{}"] * 3)),
                   d / "b.parquet")
    text = fails(InputError, lambda: vecferry.open_reader(str(d), format="parquet"))
    assert text == (f"{d / 'b.parquet'}: part has columns ['id', 'vector', 'payload'], but "
                    "a.parquet has ['id', 'vector'] (all parts of a directory must share one "
                    "schema)")


def test_parquet_negative_int_ids_cannot_be_read(tmp_path):
    p = tmp_path / "v.parquet"
    pq.write_table(_stream_table(_dense(), pa.array([0, -1, 2], type=pa.int64())), p)
    text = fails(SchemaError, lambda: read_all(str(p)))
    assert text.startswith(f"{p}: column 'id' of type int64 cannot be read as uint64: ")
    assert text.endswith(" (negative or non-integer ids are not supported)")


def _corrupt_first_page(p: Path) -> None:
    """Overwrite the first data page header: the footer stays readable, the data does not."""
    data = bytearray(p.read_bytes())
    data[4:36] = b"\xff" * 32
    p.write_bytes(bytes(data))


@pytest.mark.parametrize("mapped", [False, "payload page", "vector page"])
def test_parquet_data_that_cannot_be_decoded(tmp_path, mapped):
    p = tmp_path / "v.parquet"
    if mapped == "payload page":
        # the payload column first: its page is the one broken, and the mapping's sample of
        # the vector column at open still reads
        pq.write_table(pa.table({"k": [1, 2, 3], "emb": _dense()}), p, compression="none")
        options = {"vector_column": "emb"}
    elif mapped == "vector page":
        # broken where the mapping samples the vectors to size them, as the file is opened
        pq.write_table(pa.table({"emb": _dense(), "k": [1, 2, 3]}), p, compression="none")
        options = {"vector_column": "emb"}
    else:
        pq.write_table(_stream_table(_dense()), p, compression="none")
        options = {}
    _corrupt_first_page(p)
    text = fails(InputError, lambda: read_all(str(p), **options))
    assert text.startswith(f"{p}: cannot decode Parquet data: ")
    assert text.endswith(" (the file may be truncated or corrupt)")


# ---------------------------------------------------------------- part directories' manifest


def _parquet_parts(tmp_path: Path) -> Path:
    out = tmp_path / "parts"
    vecferry.convert(_jsonl(tmp_path / "src.jsonl"), str(out) + "/", to_format="parquet")
    assert (out / "_manifest.json").exists()
    return out


def test_part_directory_manifest_not_an_object(tmp_path):
    d = _parquet_parts(tmp_path)
    (d / "_manifest.json").write_text("[1, 2]")
    text = fails(InputError, lambda: vecferry.open_reader(str(d), format="parquet"))
    assert text == (f"{d / '_manifest.json'}: directory manifest is not valid: not a JSON object "
                    "(fix or delete _manifest.json)")


@pytest.mark.parametrize("name", ["../escape.parquet", ".."])
def test_part_directory_manifest_names_an_invalid_part(tmp_path, name):
    d = _parquet_parts(tmp_path)
    manifest = json.loads((d / "_manifest.json").read_text())
    manifest["parts"][0]["name"] = name
    (d / "_manifest.json").write_text(json.dumps(manifest))
    text = fails(InputError, lambda: vecferry.open_reader(str(d), format="parquet"))
    assert text == f"{d / '_manifest.json'}: directory manifest names an invalid part {name!r}"


def test_part_directory_with_an_unlisted_part(tmp_path):
    d = _parquet_parts(tmp_path)
    first = sorted(d.glob("part-*.parquet"))[0]
    shutil.copy(first, d / "part-00099.parquet")
    text = fails(InputError, lambda: vecferry.open_reader(str(d), format="parquet"))
    assert text == (f"{d}: part file(s) not listed in _manifest.json: part-00099.parquet "
                    "(remove them, or delete _manifest.json to read every part)")


# ---------------------------------------------------------------------------------- JSONL


def test_jsonl_without_a_single_object_line(tmp_path):
    p = tmp_path / "lists.jsonl"
    p.write_text("[1, 2]\n[3, 4]\n")
    text = fails(RecordError, lambda: vecferry.open_reader(str(p)))
    assert text == (f"{p}, line 1: a point must be a JSON object, not list (each line is one "
                    'point: {"id": ..., "vector": [...], "payload": {...}})')


def test_jsonl_writer_unknown_part_compression(tmp_path):
    src = _jsonl(tmp_path / "p.jsonl")
    text = fails(UsageError, lambda: vecferry.convert(
        src, str(tmp_path / "out") + "/", to_format="jsonl",
        writer_options={"part_compression": "bzip2"}))
    assert text == (f"{tmp_path / 'out'}/: unknown part compression 'bzip2' (part_compression "
                    "(--jsonl-compression) takes one of none, gzip, zstd)")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------- pipeline


@pytest.mark.parametrize(("options", "message"), [
    ({"batch_size": 0}, "batch_size must be a positive integer, not 0 (the default is 2048)"),
    ({"batch_size": -5}, "batch_size must be a positive integer, not -5 (the default is 2048)"),
    ({"limit": -1}, "limit must be a non-negative integer or None, not -1 (None (the default) "
                    "converts every point)"),
    ({"on_error": "ignore"}, "on_error must be 'fail' or 'skip', not 'ignore'"),
])
def test_convert_refuses_bad_options(tmp_path, options, message):
    src = _jsonl(tmp_path / "p.jsonl")
    text = fails(UsageError, lambda: vecferry.convert(src, str(tmp_path / "out.jsonl"),
                                                       **options))
    assert text == message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]


@pytest.mark.parametrize("kind", ["not_json", "not_an_object", "other_job"])
def test_resume_state_that_does_not_fit(tmp_path, kind):
    pytest.importorskip("qdrant_client")
    src = _jsonl(tmp_path / "p.jsonl")
    dst = f"qdrant-local://{tmp_path / 'q'}/docs"
    state = tmp_path / "state.json"
    if kind == "not_json":
        state.write_text('{"src": ')
        cls, want = InputError, (f"{state}: resume state is not valid JSON "
                                 "(delete it to start from the beginning)")
    elif kind == "not_an_object":
        state.write_text("[1]")
        cls, want = InputError, (f"{state}: resume state is not a JSON object "
                                 "(delete it to start from the beginning)")
    else:
        state.write_text(json.dumps({"src": "a.jsonl", "dst": "qdrant-local://x/y",
                                     "position": 3, "written": 3, "rejected": 0}))
        cls, want = UsageError, (f"{state}: resume state belongs to a.jsonl -> "
                                 "qdrant-local://x/y (pass --state with another file, or "
                                 "delete it)")
    text = fails(cls, lambda: vecferry.convert(src, dst, resume=True, state=str(state),
                                                workers=1))
    assert text == want


def test_a_jsonl_point_with_keys_beside_id_vector_and_payload_is_refused(tmp_path: Path):
    """Such keys were dropped without a word (and verify then called the copy identical)."""
    src = tmp_path / "extra.jsonl"
    src.write_text('{"id": 1, "vector": [1, 2], "text": "hello", "payload": {"a": 1}}\n'
                   '{"id": 2, "vector": [1, 2], "shard_key": null, "order_value": null}\n')
    with pytest.raises(RecordError) as info:
        vecferry.convert(str(src), str(tmp_path / "out.parquet"))
    assert str(info.value) == (
        f"{src}, line 1, id 1: point has 'text' beside id, vector and payload, which a point "
        'cannot hold (move them into "payload", or read the file as records with a mapping '
        "(--id-key, --vector-key, --payload-key))")
    # keys that are null hold nothing to lose (Qdrant's records carry some)
    report = vecferry.convert(str(src), str(tmp_path / "out.parquet"), on_error="skip")
    assert (report["written"], report["rejected"]) == (1, 1)
    rejected = json.loads(Path(report["rejects_file"]).read_text())
    assert rejected["text"] == "hello" and rejected["payload"] == {"a": 1}


def test_a_numpy_output_of_no_points_reads_back(tmp_path: Path):
    """A --limit 0 run (or an empty source) wrote a directory vecferry then refused to read:
    "input is empty: the matrix has no rows"."""
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "vector": [1, 2]}\n')
    out = tmp_path / "none"
    vecferry.convert(str(src), str(out), to_format="npy", limit=0)
    report = vecferry.convert(str(out), str(tmp_path / "back.jsonl"))
    assert (report["read"], report["written"]) == (0, 0)
    from vecferry.verification import verify

    assert verify(str(out))["ok"]
    # a bare matrix of no rows is still an empty input
    np.save(tmp_path / "empty.npy", np.zeros((0, 2), dtype=np.float32))
    with pytest.raises(InputError, match="input is empty: the matrix has no rows"):
        vecferry.open_reader(str(tmp_path / "empty.npy"))


def test_two_per_vector_files_naming_one_number_are_refused(tmp_path: Path):
    """007.npy and 7.npy were read as two records of id 7, reported only as a duplicate."""
    folder = tmp_path / "vecs"
    folder.mkdir()
    for stem in ("007", "7", "8"):
        np.save(folder / f"{stem}.npy", np.ones(2, dtype=np.float32))
    with pytest.raises(InputError) as info:
        vecferry.open_reader(str(folder))
    assert str(info.value) == (
        f"{folder}: 007.npy and 7.npy both name id 7 (rename or remove one of them (file names "
        "that are numbers are read as integer ids))")
    (folder / "7.npy").unlink()
    report = vecferry.convert(str(folder), str(tmp_path / "out.jsonl"))
    assert report["written"] == 2
    ids = [json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert ids == [7, 8]
