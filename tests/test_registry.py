"""Format resolution: explicit > scheme > extension (longest first) > directory contents."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pytest

import vecferry.converters as registry
from vecferry.converters import FORMATS, FormatSpec, get_format, resolve
from vecferry.errors import FormatNotFoundError, MissingDependencyError


@pytest.mark.parametrize(("location", "name"), [
    ("a.jsonl", "jsonl"), ("a.JSONL", "jsonl"), ("a.ndjson", "jsonl"), ("a.jsonl.gz", "jsonl"),
    ("a.jsonl.zst", "jsonl"), ("dir/a.ndjson.gz", "jsonl"), ("a.parquet", "parquet"),
    ("a.pq", "parquet"), ("a.npy", "npy"), ("a.npz", "npy"), ("a.faiss", "faiss"),
    ("a.index", "faiss"), ("qdrant://host:6333/coll", "qdrant"), ("QDRANT://h/c", "qdrant"),
    ("qdrants://h/c", "qdrant"), ("qdrant-local:///tmp/x/coll", "qdrant"),
    ("qdrant-edge:///tmp/shard", "qdrant-edge"), ("file:///tmp/a.parquet", "parquet"),
    ("out.parquet/", "parquet"),
])
def test_resolve(location, name):
    assert resolve(location).name == name


def test_explicit_beats_scheme_and_extension():
    assert resolve("a.jsonl", "parquet").name == "parquet"
    assert resolve("qdrant://h/c", "jsonl").name == "jsonl"


def test_scheme_beats_extension():
    assert resolve("qdrant://host/collection.parquet").name == "qdrant"


def test_longest_suffix_first(monkeypatch):
    gz = FormatSpec(name="gzip-blob", description="any .gz", extensions=(".gz",))
    monkeypatch.setattr(registry, "all_formats", lambda: (gz, *FORMATS))
    assert resolve("a.jsonl.gz").name == "jsonl"
    assert resolve("a.tar.gz").name == "gzip-blob"


def test_directory_contents(tmp_path):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "part-0.parquet").write_bytes(b"")
    (tmp_path / "vecs").mkdir()
    np.save(tmp_path / "vecs" / "a.npy", np.ones(2, dtype=np.float32))
    assert resolve(str(tmp_path / "parts")).name == "parquet"
    assert resolve(str(tmp_path / "vecs")).name == "npy"
    # a FAISS index with vecferry's sidecars (one of them Parquet), or LangChain's store
    (tmp_path / "index").mkdir()
    for name in ("points.faiss", "points.faiss.manifest.json", "points.faiss.payloads.parquet"):
        (tmp_path / "index" / name).write_bytes(b"")
    assert resolve(str(tmp_path / "index")).name == "faiss"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatNotFoundError, match="cannot tell the format of"):
        resolve(str(tmp_path / "empty"))


def test_extension_beats_directory_contents(tmp_path):
    d = tmp_path / "x.npy"
    d.mkdir()
    (d / "part.parquet").write_bytes(b"")
    assert resolve(str(d)).name == "npy"


def test_unknown_name_lists_the_known_formats():
    with pytest.raises(FormatNotFoundError) as info:
        get_format("csv")
    known = ", ".join(s.name for s in FORMATS)
    assert str(info.value) == f"unknown format 'csv' (known formats: {known})"
    assert known.startswith("jsonl, parquet, npy, faiss, qdrant, qdrant-edge")
    assert info.value.exit_code == 2


def test_unknown_extension_lists_the_known_formats():
    with pytest.raises(FormatNotFoundError) as info:
        resolve("data.csv", role="writer")
    text = str(info.value)
    assert text.startswith("data.csv: cannot tell the format of 'data.csv' (pass --to FORMAT; "
                           "known: jsonl (.jsonl .ndjson .jsonl.gz")
    assert "parquet (.parquet .pq)" in text
    assert "qdrant (qdrant:// qdrants:// qdrant-local://)" in text
    assert text.endswith(", vdf (a directory holding VDF_META.json))")
    assert "snapshot" not in text  # read only: no output can be one
    with pytest.raises(FormatNotFoundError, match=r"\(pass --from FORMAT; known: ") as info:
        resolve("data.csv")
    assert "snapshot (.snapshot)" in str(info.value)


def test_the_formats_table_lines_up_whatever_a_format_is_recognised_by():
    from click.testing import CliRunner

    from vecferry.cli import main

    lines = CliRunner().invoke(main, ["formats"]).output.splitlines()
    header = lines[0]
    start = header.index("description")
    rows = [line for line in lines[1:] if not line.startswith(" ")]
    assert len(rows) >= 8
    for line in rows:
        assert line[start - 1] == " " and line[start] != " ", line


def test_unknown_scheme():
    with pytest.raises(FormatNotFoundError) as info:
        resolve("ftp://bucket/a.parquet")
    assert str(info.value) == ("ftp://bucket/a.parquet: no format handles the ftp:// scheme "
                               "(known schemes: qdrant, qdrants, qdrant-local, qdrant-edge)")


def test_storage_scheme_resolves_by_extension():
    # object storage holds files: s3:// gs:// az:// https:// go by the path's extension
    assert resolve("s3://bucket/a.parquet").name == "parquet"
    assert resolve("gs://bucket/dir/x.jsonl.gz").name == "jsonl"
    assert resolve("az://container/i.faiss").name == "faiss"
    assert resolve("https://example.org/v.npy").name == "npy"


def test_missing_dependency_names_the_extra():
    spec = FormatSpec(name="imaginary", description="needs a module that does not exist",
                      reader="nowhere:Reader", requires=("vecferry_no_such_module",),
                      extra="imaginary")
    assert spec.missing() == ["vecferry_no_such_module"]
    with pytest.raises(MissingDependencyError) as info:
        spec.load("reader")
    assert str(info.value) == ("format 'imaginary' needs vecferry_no_such_module, which is not "
                               "installed (pip install 'vecferry[imaginary]')")
    assert info.value.exit_code == 1


def test_read_only_format_cannot_be_a_target():
    spec = FormatSpec(name="ro", description="read only", reader="x:Y")
    with pytest.raises(FormatNotFoundError, match="format 'ro' cannot be a write target"):
        spec.load("writer")


class _EntryPoint:
    def __init__(self, value):
        self.value = value

    def load(self):
        return self.value


def test_entry_point_format(monkeypatch, tmp_path):
    plugin = FormatSpec(name="plugin", description="from a third-party package",
                        extensions=(".vfp",), reader="vecferry.converters.jsonl:JsonlReader")

    def entry_points(group=None):
        assert group == "vecferry.formats"
        return [_EntryPoint(plugin), _EntryPoint("not a spec")]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    registry.all_formats.cache_clear()
    try:
        formats = registry.all_formats()
        assert formats[-1] is plugin and len(formats) == len(FORMATS) + 1
        assert resolve("data.vfp") is plugin
        src = tmp_path / "data.vfp"
        src.write_text('{"id": 1, "vector": [1.0, 2.0]}\n')
        reader = registry.open_reader(str(src))
        assert sum(b.num_rows for b in reader.batches(10)) == 1
        reader.close()
    finally:
        registry.all_formats.cache_clear()


def test_core_class_paths_import():
    for spec in FORMATS[:3]:
        for role in ("reader", "writer"):
            if getattr(spec, role):
                assert isinstance(spec.load(role), type)


def test_all_formats_is_data_only():
    for spec in FORMATS:
        assert all(isinstance(getattr(spec, f), (str, tuple, type(None)))
                   for f in ("name", "extensions", "schemes", "reader", "writer", "requires"))
        assert Path(spec.name).name == spec.name
