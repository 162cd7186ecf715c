"""Qdrant Edge keeps the optimizer settings a shard has (deleted threshold, vacuum minimum,
segment number and size, indexing threshold): a new shard is made with the ones a
collection config or ``--collection-config`` gives, and a copy out of the shard carries
them. The others (a server's flush interval, optimization threads, ...) given with
``--collection-config`` are named before writing; they were dropped without a word."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import vecferry

pytest.importorskip("qdrant_edge")
pytest.importorskip("qdrant_client")


def _local(tmp_path: Path) -> str:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(tmp_path / "q"))
    try:
        client.create_collection("docs", vectors_config=models.VectorParams(size=2,
                                                                            distance="Dot"))
        client.upsert("docs", [models.PointStruct(id=i, vector=[1.0, float(i)])
                               for i in range(1, 4)])
    finally:
        client.close()
    return f"qdrant-local://{tmp_path / 'q'}/docs"


def test_optimizer_settings_reach_the_shard_and_come_back(tmp_path: Path) -> None:
    shard = tmp_path / "e"
    dst = f"qdrant-edge://{shard}"
    wanted = {"deleted_threshold": 0.3, "indexing_threshold": 5000,
              "default_segment_number": 2, "vacuum_min_vector_number": 50}
    report = vecferry.convert(
        _local(tmp_path), dst, writer_options={"collection_config": {
            "optimizer_config": {**wanted, "flush_interval_sec": 7}}})
    assert report["warnings"] == [
        f"{dst}: flush_interval_sec 7 (from --collection-config) not kept: a Qdrant Edge "
        "shard keeps only the optimizer settings deleted_threshold, vacuum_min_vector_number, "
        "default_segment_number, max_segment_size, indexing_threshold, prevent_unoptimized"]
    stored = json.loads((shard / "edge_config.json").read_text())["optimizers"]
    assert {k: v for k, v in stored.items() if v is not None} == wanted
    archive = tmp_path / "x.jsonl"
    vecferry.convert(dst, archive)
    manifest = json.loads(Path(f"{archive}.manifest.json").read_text())
    assert manifest["collection"]["optimizer_config"] == wanted
    # and an Edge-to-Edge copy keeps them without a word
    again = tmp_path / "e2"
    assert vecferry.convert(archive, f"qdrant-edge://{again}")["warnings"] == []
    stored = json.loads((again / "edge_config.json").read_text())["optimizers"]
    assert {k: v for k, v in stored.items() if v is not None} == wanted


def test_a_server_collections_own_optimizer_settings_are_not_named(tmp_path: Path) -> None:
    # local mode reports optimizer settings of its own for every collection; only the
    # ones Edge holds are kept, and nothing is said of the rest
    dst = f"qdrant-edge://{tmp_path / 'e'}"
    assert vecferry.convert(_local(tmp_path), dst)["warnings"] == []
