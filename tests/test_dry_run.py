"""``--dry-run``: every check made before the first write runs (formats, options, what the
target cannot hold, an existing output or collection, its config), and nothing is written:
no file, no temporary, no rejects file, no collection, no local-mode folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import vecferry
from vecferry.cli import main
from vecferry.errors import OutputExistsError, TargetError, UnsupportedError


@pytest.fixture
def matrix(tmp_path: Path) -> str:
    path = tmp_path / "vectors.npy"
    np.save(path, np.arange(40, dtype=np.float32).reshape(10, 4))
    return str(path)


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_file_target_is_checked_and_not_written(matrix: str, tmp_path: Path) -> None:
    before = files(tmp_path)
    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(main, ["convert", matrix, str(out), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stderr == f"dry run: 10 point(s) npy -> parquet: {out}; nothing was written\n"
    assert files(tmp_path) == before
    report = vecferry.convert(matrix, str(out), dry_run=True, limit=3)
    assert (report["dry_run"], report["points"], report["written"]) == (True, 3, 0)
    assert files(tmp_path) == before
    # what a real run would refuse, a dry run refuses the same way
    out.write_text("mine")
    with pytest.raises(OutputExistsError):
        vecferry.convert(matrix, str(out), dry_run=True)
    assert out.read_text() == "mine"


def test_what_a_target_cannot_hold_is_said(tmp_path: Path) -> None:
    src = tmp_path / "sparse.jsonl"
    src.write_text(json.dumps({"id": 1, "vector": {"s": {"indices": [1], "values": [0.5]}}})
                   + "\n")
    with pytest.raises(UnsupportedError) as dry:
        vecferry.convert(str(src), str(tmp_path / "out") + "/", to_format="npy", dry_run=True)
    with pytest.raises(UnsupportedError) as real:
        vecferry.convert(str(src), str(tmp_path / "out") + "/", to_format="npy")
    assert str(dry.value) == str(real.value)
    assert files(tmp_path) == ["sparse.jsonl"]


def test_a_collection_says_what_would_be_done(matrix: str, tmp_path: Path) -> None:
    pytest.importorskip("qdrant_client")
    from qdrant_client import QdrantClient

    new = f"qdrant-local://{tmp_path / 'qd'}/docs"
    report = vecferry.convert(matrix, new, dry_run=True, writer_options={"distance": "Cosine"})
    assert report["target"] == {
        "collection": "docs", "engine": "local", "action": "create",
        "config": {"vectors": {"": {"size": 4, "distance": "Cosine"}}, "sparse_vectors": {}}}
    assert not (tmp_path / "qd").exists()  # local mode's folder is not left behind
    vecferry.convert(matrix, new, writer_options={"distance": "Cosine"})
    report = vecferry.convert(matrix, new, dry_run=True)
    assert report["target"]["action"] == "append" and "config" not in report["target"]
    report = vecferry.convert(matrix, new, dry_run=True, overwrite=True)
    assert report["target"]["action"] == "drop and create"
    with pytest.raises(TargetError, match="distance Cosine in the target, Euclid in the source"):
        vecferry.convert(matrix, new, dry_run=True, writer_options={"distance": "Euclid",
                                                                    "mode": "append"})
    client = QdrantClient(path=str(tmp_path / "qd"))
    assert client.count("docs").count == 10  # the overwrite dry run dropped nothing
    client.close()
    # the config a run would give the new collection shows the guess the warning names
    result = CliRunner().invoke(main, ["convert", matrix, new, "--dry-run", "--overwrite"])
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "warning: the source does not say which distance its vectors use; the collection "
        "uses Dot, which stores vectors exactly (pass --distance to choose)",
        f"dry run: 10 point(s) npy -> qdrant: {new}; nothing was written",
        "collection 'docs' would be dropped and created anew",
        'config: {"sparse_vectors": {}, "vectors": {"": {"distance": "Dot", "size": 4}}}']


def test_a_dry_run_into_an_existing_edge_shard_names_the_shard(matrix, tmp_path):
    pytest.importorskip("qdrant_edge")
    shard = f"qdrant-edge://{tmp_path / 'shard'}"
    vecferry.convert(matrix, shard, writer_options={"distance": "Dot"})
    result = CliRunner().invoke(main, ["convert", matrix, shard, "--dry-run"])
    assert result.exit_code == 0
    assert result.stderr.splitlines()[-1] == ("the shard exists: points would be added or "
                                              "updated by id")
