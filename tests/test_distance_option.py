"""``--distance`` on file targets: recorded in the output's manifest for vectors whose source
records none, so a later load into Qdrant or FAISS finds it; never over a recorded distance."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from roundtrip import read_points
from vecferry.cli import main
from vecferry.errors import UsageError
from vecferry.pipeline import convert


@pytest.fixture
def matrix(tmp_path):
    path = tmp_path / "vectors.npy"
    np.save(path, np.random.default_rng(3).standard_normal((300, 8)).astype(np.float32))
    return path


@pytest.mark.parametrize(("target", "fmt"), [
    ("out.parquet", None), ("out.jsonl", None), ("parts/", "parquet"), ("npdir", "npy"),
    ("vdfdir", "vdf")])
def test_file_targets_record_the_distance(tmp_path, matrix, target, fmt):
    dst = str(tmp_path / target)
    convert(str(matrix), dst, to_format=fmt, writer_options={"distance": "Dot"})
    manifest, points = read_points(dst, format=fmt)
    assert [v.distance for v in manifest.vectors] == ["Dot"]
    assert len(points) == 300


def test_partitioned_run_records_it_in_the_directory_manifest(tmp_path, matrix):
    dst = tmp_path / "parts"
    report = convert(str(matrix), str(dst) + "/", to_format="parquet", workers=2,
                     partition_size=2048, writer_options={"distance": "Manhattan"})
    assert report.get("partitions", 0) > 1
    manifest = json.loads((dst / "_manifest.json").read_text())
    assert [v["distance"] for v in manifest["vectors"]] == ["Manhattan"]
    read, _ = read_points(str(dst))
    assert [v.distance for v in read.vectors] == ["Manhattan"]


def test_a_recorded_distance_stays_and_sparse_vectors_get_none(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": 1, "vector": {"text": [0.5, 0.25],
                                                   "kw": {"indices": [3], "values": [1.0]}}})
                   + "\n")
    first = tmp_path / "first.parquet"
    convert(str(src), str(first), writer_options={"distance": "Euclid"})
    manifest, _ = read_points(str(first))
    assert {v.name: v.distance for v in manifest.vectors} == {"text": "Euclid", "kw": None}
    report = convert(str(first), str(tmp_path / "second.jsonl"),
                     writer_options={"distance": "Cosine"})
    assert ("--distance Cosine is for vectors whose source records no distance; these keep "
            "the source's: text Euclid") in report["warnings"]
    manifest, _ = read_points(str(tmp_path / "second.jsonl"))
    assert {v.name: v.distance for v in manifest.vectors} == {"text": "Euclid", "kw": None}


def test_unknown_distance_from_the_python_api(tmp_path, matrix):
    with pytest.raises(UsageError) as err:
        convert(str(matrix), str(tmp_path / "o.parquet"), writer_options={"distance": "cos"})
    assert str(err.value) == "unknown distance 'cos' (one of Cosine, Euclid, Dot, Manhattan)"
    assert not (tmp_path / "o.parquet").exists()


def test_cli_then_load_into_local_qdrant(tmp_path, matrix):
    pytest.importorskip("qdrant_client")
    out = tmp_path / "a.parquet"
    result = CliRunner().invoke(main, ["convert", str(matrix), str(out), "--distance", "Cosine",
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    target = f"qdrant-local://{tmp_path}/q/docs"
    result = CliRunner().invoke(main, ["convert", str(out), target, "--quiet"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["inspect", target, "--json"])
    assert result.exit_code == 0, result.output
    assert [v["distance"] for v in json.loads(result.output)["vectors"]] == ["Cosine"]


def test_packed_bits_of_a_binary_index_get_no_distance(tmp_path):
    faiss = pytest.importorskip("faiss")
    index = faiss.IndexBinaryFlat(64)
    index.add(np.random.default_rng(4).integers(0, 256, (50, 8), dtype=np.uint8))
    src = str(tmp_path / "bits.faiss")
    faiss.write_index_binary(index, src)
    dst = str(tmp_path / "bits.parquet")
    convert(src, dst, writer_options={"distance": "Cosine"})
    manifest, points = read_points(dst)
    assert [(v.datatype, v.distance) for v in manifest.vectors] == [("uint8", None)]
    assert manifest.extra["faiss"]["binary_bits"] == 64 and len(points) == 50
