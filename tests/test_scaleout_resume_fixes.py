"""Resuming partitioned runs, after review: a finished load into any kind of collection
(server, local mode, Edge) sends nothing again on ``--resume``; the staging directory of an
interrupted run is resumed only by a run that writes the same thing (not another target
format, whose parts would be mixed with the first run's), while options that change only how
the run goes (``--workers``, ``--batch-size``) do not stop it; and a partitioned run from an
object store keeps the caller's storage options in its worker processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from click.testing import CliRunner

import vecferry
from failing import fails
from scaleout_faults import InterruptAfterPart
from vecferry.cli import main
from vecferry.errors import UsageError
from vecferry.pipeline import default_state_path

N, DIM = 1200, 8
PARTS = {"workers": 2, "partition_size": "16KB"}


def _src(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    src = tmp_path / "src.jsonl"
    with open(src, "w") as f:
        for i in range(N):
            f.write(json.dumps({"id": i + 1, "vector": rng.standard_normal(DIM).tolist(),
                                "payload": {"i": i}}) + "\n")
    return src


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # staging directories and state files of collections are made in the working directory
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VECFERRY_RETRY_BASE_DELAY", "0.01")




def _interrupted(src: Path, dst: str, **options: Any) -> Path:
    """The staging directory a partitioned run to ``dst`` left when interrupted."""
    with pytest.raises(KeyboardInterrupt):
        vecferry.convert(src, dst, progress=InterruptAfterPart(), **PARTS, **options)
    staging = Path(f".{dst.rstrip('/')}.vfparts")
    assert (staging / "plan.json").is_file() and any((staging / "done").glob("*.json"))
    return staging


# -- 1. a finished partitioned load into a collection sends nothing again ---------------------

def test_a_finished_partitioned_load_into_an_edge_shard_sends_nothing_again(
        tmp_path: Path) -> None:
    qe = pytest.importorskip("qdrant_edge")
    src = _src(tmp_path)
    dst = f"qdrant-edge://{tmp_path / 'e'}"
    first = vecferry.convert(src, dst, resume=True, **PARTS)
    assert first["partitions"] > 1 and first["written"] == N
    assert json.loads(Path(default_state_path(dst)).read_text())["done"] is True
    shard = qe.EdgeShard.load(str(tmp_path / "e"))
    try:
        shard.update(qe.UpdateOperation.set_payload([1], {"edited": True}))
        shard.flush()
    finally:
        shard.close()
    again = vecferry.convert(src, dst, resume=True, **PARTS)
    assert (again["read"], again["written"], again["written_total"]) == (0, 0, N)
    shard = qe.EdgeShard.load(str(tmp_path / "e"))
    try:
        assert shard.retrieve([1], True, False)[0].payload == {"i": 0, "edited": True}
    finally:
        shard.close()


def test_a_finished_partitioned_load_into_a_server_sends_nothing_again_from_the_cli(
        tmp_path: Path) -> None:
    pytest.importorskip("qdrant_client")
    from qdrant_standin import QdrantStandIn

    src = _src(tmp_path)
    with QdrantStandIn() as server:
        dst = server.location("c")
        args = ("convert", str(src), dst, "--partition-size", "16KB", "--workers", "2",
                "--resume", "--json")
        first = _cli(*args)
        assert first.exit_code == 0, first.stderr
        assert json.loads(first.stdout)["partitions"] > 1
        server.engine.set_payload("c", payload={"edited": True}, points=[1])
        again = _cli(*args)
        assert again.exit_code == 0, again.stderr
        report = json.loads(again.stdout)
        assert (report["read"], report["written"], report["written_total"]) == (0, 0, N)
        assert server.engine.retrieve("c", [1])[0].payload == {"i": 0, "edited": True}


# -- 2. what a resumed partitioned run must have in common with the run it resumes ------------

def test_a_partitioned_resume_into_another_format_is_refused(tmp_path: Path) -> None:
    src = _src(tmp_path)
    staging = _interrupted(src, "out/", to_format="parquet")
    text = fails(UsageError, lambda: vecferry.convert(src, "out/", to_format="jsonl",
                                                      resume=True, **PARTS))
    # it wrote the other format's parts beside the first run's: 2x the points, two formats
    assert text == (f"{staging}: the run this would resume wrote parquet, and this one "
                    "writes jsonl (resume with --to parquet, or run without --resume to start "
                    "over)")
    report = vecferry.convert(src, "out/", to_format="parquet", resume=True, **PARTS)
    assert report["written"] == N and report["resumed_partitions"] >= 1
    kinds = {f.suffix for f in Path("out").iterdir() if f.name != "_manifest.json"}
    assert kinds == {".parquet"}
    assert vecferry.verify(str(src), "out/")["ok"]


def test_a_partitioned_resume_may_change_how_the_run_goes(tmp_path: Path) -> None:
    # --workers reaches the JSONL reader as an option (its parsing processes): it was part
    # of the staging stamp, and a resume on another number of processes was refused
    src = _src(tmp_path)
    _interrupted(src, "out/", to_format="parquet", reader_options={"workers": 2})
    report = vecferry.convert(src, "out/", to_format="parquet", resume=True, batch_size=100,
                              reader_options={"workers": 3}, **PARTS)
    assert report["written"] == N and report["resumed_partitions"] >= 1
    assert report["warnings"] == []
    assert vecferry.verify(str(src), "out/")["ok"]


def test_a_partitioned_resume_from_the_cli_with_other_workers_resumes(tmp_path: Path) -> None:
    src = _src(tmp_path)
    _interrupted(src, "out/", to_format="parquet", reader_options={"workers": 2})
    result = _cli("convert", str(src), "out/", "--to", "parquet", "--partition-size", "16KB",
                  "--workers", "3", "--batch-size", "64", "--resume", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["written"] == N and report["resumed_partitions"] >= 1


def test_a_staging_directory_of_an_earlier_version_still_resumes(tmp_path: Path) -> None:
    # its stamp did not name the target format
    src = _src(tmp_path)
    staging = _interrupted(src, "out/", to_format="parquet")
    marker = orjson.loads((staging / "plan.json").read_bytes())
    marker["stamp"].pop("to")
    (staging / "plan.json").write_bytes(orjson.dumps(marker))
    report = vecferry.convert(src, "out/", to_format="parquet", resume=True, **PARTS)
    assert report["written"] == N and report["resumed_partitions"] >= 1


# -- 3. storage options reach the worker processes -------------------------------------------

def test_a_partitioned_resume_of_an_s3_directory_from_the_cli(
        tmp_path: Path, s3_endpoint: str, s3: Any, bucket: str) -> None:
    # the workers read at the endpoint given with --storage-option, not at amazonaws.com
    rng = np.random.default_rng(6)
    for part in range(3):
        s3.pipe(f"{bucket}/in/f{part}.jsonl", "".join(
            json.dumps({"id": part * 1000 + i, "vector": rng.standard_normal(DIM).tolist()})
            + "\n" for i in range(400)).encode())
    src = f"s3://{bucket}/in/"
    args = ("convert", src, "out/", "--from", "jsonl", "--to", "parquet", "--workers", "2",
            "--partition-size", "16KB", "--storage-option", f"endpoint_url={s3_endpoint}",
            "--json")
    with pytest.raises(KeyboardInterrupt):
        vecferry.convert(src, "out/", from_format="jsonl", to_format="parquet",
                         progress=InterruptAfterPart(),
                         storage_options={"endpoint_url": s3_endpoint}, **PARTS)
    result = _cli(*args, "--resume")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["written"] == 1200 and report["resumed_partitions"] >= 1
    assert report["partitions"] > 1
