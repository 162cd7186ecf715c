"""Partitioned conversions: plans, the local process pool, retries, resume and Ray.

Every parallel result is compared with the single-process result of the same source by
digest (the order-independent sum vecferry records), so a lost, doubled or changed point fails.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from vecferry.converters import open_reader
from vecferry.errors import RecordError
from vecferry.pipeline import convert
from vecferry.plan import make_plan, read_partition
from vecferry.verification import verify

N, DIM = 6000, 16
SMALL = 64 << 10  # partition size that cuts the test sources into several pieces


def _digest(location: str) -> tuple[int, str]:
    result = verify(location)
    return result["source"]["count"], result["source"]["digest"]


@pytest.fixture(scope="module")
def npy_src(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("scale")
    rng = np.random.default_rng(3)
    np.save(d / "v.npy", rng.standard_normal((N, DIM)).astype(np.float32))
    np.save(d / "ids.npy", (np.arange(N, dtype=np.uint64) * 7919 + (1 << 40)))
    with open(d / "p.jsonl", "w") as f:
        for i in range(N):
            f.write(json.dumps({"i": i, "name": "é" * (i % 5), "big": 2**60 + i}) + "\n")
    opts = {"ids": str(d / "ids.npy"), "payloads": str(d / "p.jsonl")}
    single = str(d / "single.parquet")
    convert(str(d / "v.npy"), single, reader_options=opts, workers=1)
    jsonl = str(d / "points.jsonl")
    convert(single, jsonl, workers=1)
    return {"dir": str(d), "npy": str(d / "v.npy"), "opts": opts, "parquet": single,
            "jsonl": jsonl}


def test_plans_are_made_from_metadata_and_are_deterministic(npy_src) -> None:
    reader = open_reader(npy_src["npy"], format="npy", **npy_src["opts"])
    try:
        a = make_plan(reader, npy_src["npy"], "npy", npy_src["opts"], SMALL)
        b = make_plan(reader, npy_src["npy"], "npy", npy_src["opts"], SMALL)
    finally:
        reader.close()
    assert len(a.partitions) > 3
    assert [p.spec for p in a.partitions] == [p.spec for p in b.partitions]
    assert a.rows == N
    # ranges tile the source exactly, and a partition survives pickling (sent to workers)
    specs = [p.spec for p in a.partitions]
    assert specs[0]["start"] == 0 and specs[-1]["stop"] == N
    assert all(x["stop"] == y["start"] for x, y in itertools.pairwise(specs))
    assert pickle.loads(pickle.dumps(a.partitions[2])) == a.partitions[2]


def test_jsonl_byte_ranges_read_every_line_once(npy_src) -> None:
    reader = open_reader(npy_src["jsonl"], format="jsonl")
    try:
        plan = make_plan(reader, npy_src["jsonl"], "jsonl", {}, SMALL)
        assert len(plan.partitions) > 5
        ids = [i for p in plan.partitions for b in read_partition(reader, p, 500)
               for i in b.column("id").to_pylist()]
    finally:
        reader.close()
    assert len(ids) == N == len(set(ids))


@pytest.mark.parametrize("target,to", [("out/", "parquet"), ("out/", "jsonl"),
                                       ("out.jsonl", None), ("out.jsonl.gz", None),
                                       ("out.npy", None)])
@pytest.mark.parametrize("source", ["npy", "jsonl", "parquet-dir"])
def test_parallel_equals_single_process(npy_src, tmp_path, source, target, to) -> None:
    expected = _digest(npy_src["parquet"])
    if source == "npy":
        src, opts = npy_src["npy"], npy_src["opts"]
    elif source == "jsonl":
        src, opts = npy_src["jsonl"], {}
    else:
        # many small row groups, packed into partitions
        src, opts = str(tmp_path / "src") + "/", {}
        convert(npy_src["parquet"], src, to_format="parquet", workers=1,
                writer_options={"row_group_bytes": 16 << 10})
    dst = f"{tmp_path}/{target}"
    report = convert(src, dst, to_format=to, reader_options=opts, workers=2,
                     partition_size=SMALL)
    assert report["partitions"] > 2 and report["workers"] == 2
    assert report["written"] == N and report["rejected"] == 0
    assert report["duplicate_ids"]["count"] == 0
    assert _digest(dst) == expected
    # nothing of the run is left next to the output
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_faiss_partitions_by_position_and_by_inverted_list(tmp_path) -> None:
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4000, 8)).astype(np.float32)
    ids = rng.choice(1 << 40, size=4000, replace=False).astype(np.int64)
    flat = faiss.IndexIDMap(faiss.IndexFlatL2(8))
    flat.add_with_ids(x, ids)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(8), 8, 16)
    ivf.train(x)
    ivf.add_with_ids(x, ids)
    for name, index in (("flat", flat), ("ivf", ivf)):
        path = str(tmp_path / f"{name}.faiss")
        faiss.write_index(index, path)
        single = str(tmp_path / f"{name}.parquet")
        convert(path, single, workers=1)
        out = str(tmp_path / f"{name}-parts") + "/"
        report = convert(path, out, to_format="parquet", workers=2, partition_size=16 << 10)
        assert report["partitions"] > 2
        assert _digest(out) == _digest(single)


def test_faiss_payload_problems_reach_the_rejects_once_in_a_partitioned_run(tmp_path) -> None:
    faiss = pytest.importorskip("faiss")
    x = np.random.default_rng(6).standard_normal((4000, 8)).astype(np.float32)
    index = faiss.IndexIDMap(faiss.IndexFlatL2(8))
    index.add_with_ids(x, np.arange(4000, dtype=np.int64) * 3)
    path = str(tmp_path / "i.faiss")
    faiss.write_index(index, path)
    meta = tmp_path / "meta.jsonl"
    meta.write_text("".join(json.dumps({"id": i * 3, "payload": {"i": i}}) + "\n"
                            for i in range(4000))
                    + "{not json\n"                                  # unreadable entry
                    + json.dumps({"id": 3, "payload": {"again": 1}}) + "\n"   # id twice
                    + json.dumps({"id": 4, "payload": {"lost": 1}}) + "\n")   # no vector
    runs = {}
    for workers, out in ((1, str(tmp_path / "one.parquet")), (2, str(tmp_path / "parts") + "/")):
        rejects = tmp_path / f"rejects{workers}.jsonl"
        report = convert(path, out, to_format="parquet", workers=workers, on_error="skip",
                         partition_size=16 << 10, rejects=str(rejects),
                         reader_options={"payloads": str(meta)})
        assert report.get("partitions", 1) > 1 if workers == 2 else "partitions" not in report
        runs[workers] = (report["written"], report["rejected"],
                         [json.loads(r)["_vecferry_reject"]["reason"]
                          for r in rejects.read_text().splitlines()])
        assert _digest(out)[0] == 4000
    assert runs[2] == runs[1]
    assert runs[1][:2] == (4000, 3)
    assert [r.split(":")[0] for r in runs[1][2]] == [
        "not JSON", "payload id 3 is given more than once; the first is kept",
        "payload for id 4 has no vector in the FAISS index"]
    with pytest.raises(RecordError, match="not JSON"):  # with on_error=fail, at once
        convert(path, str(tmp_path / "failed") + "/", to_format="parquet", workers=2,
                partition_size=16 << 10, reader_options={"payloads": str(meta)})


def test_bad_line_in_a_later_partition_names_its_real_line(npy_src, tmp_path) -> None:
    lines = Path(npy_src["jsonl"]).read_bytes().splitlines(keepends=True)
    bad = N - 10
    lines[bad] = b'{"id": 1, "vector": [1.0, \n'
    src = tmp_path / "bad.jsonl"
    src.write_bytes(b"".join(lines))
    with pytest.raises(RecordError) as info:
        convert(str(src), str(tmp_path / "o") + "/", to_format="parquet", workers=2,
                partition_size=SMALL)
    assert f"line {bad + 1}" in str(info.value)
    assert "line is not valid JSON" in str(info.value)
    rejects = tmp_path / "r.jsonl"
    report = convert(str(src), str(tmp_path / "o2") + "/", to_format="parquet", workers=2,
                     partition_size=SMALL, on_error="skip", rejects=str(rejects))
    assert (report["read"], report["written"], report["rejected"]) == (N, N - 1, 1)
    rec = orjson.loads(rejects.read_bytes().splitlines()[0])
    assert rec["_vecferry_reject"]["line"] == bad + 1


def test_duplicate_ids_are_counted_across_partitions(tmp_path) -> None:
    rng = np.random.default_rng(1)
    np.save(tmp_path / "v.npy", rng.standard_normal((3000, 8)).astype(np.float32))
    ids = np.arange(3000, dtype=np.uint64)
    ids[2990:] = ids[:10]  # first and last partition share ten ids
    np.save(tmp_path / "ids.npy", ids)
    report = convert(str(tmp_path / "v.npy"), str(tmp_path / "o") + "/", to_format="parquet",
                     reader_options={"ids": str(tmp_path / "ids.npy")}, workers=2,
                     partition_size=16 << 10)
    assert report["partitions"] > 2
    assert report["duplicate_ids"]["count"] == 10
    (warning,) = [w for w in report["warnings"] if "occur more than once" in w]
    assert "last written" not in warning  # a file keeps every record


@pytest.mark.parametrize("limit", [None, 5])
def test_ids_repeated_across_partitions_keep_their_last_record_in_a_collection(
        tmp_path, monkeypatch, limit) -> None:
    """Partitions land in a collection in no set order; the records of ids repeated across
    them are sent again from the partition holding them last, so the collection holds what a
    single-process run leaves. The first partition's request is slowed so that, unaided, its
    (earlier) records land last. Past the limit, the warning says what can happen instead
    (which record is kept then depends on timing, so it is not asserted)."""
    pytest.importorskip("qdrant_client")
    from qdrant_helpers import dump_stream
    from qdrant_standin import Fault, QdrantStandIn
    from vecferry import scaleout

    if limit is not None:
        monkeypatch.setattr(scaleout, "RESEND_LIMIT", limit)
    rng = np.random.default_rng(1)
    vec = rng.standard_normal((3000, 8)).astype(np.float32)
    np.save(tmp_path / "v.npy", vec)
    ids = np.arange(3000, dtype=np.uint64)
    ids[2990:] = ids[:10]  # first and last partition share ten ids
    np.save(tmp_path / "ids.npy", ids)
    with QdrantStandIn() as server:
        server.add_fault(Fault("upsert", "delay", times=1, seconds=2.0,
                               when=lambda body: any(p["id"] == 0 for p in body["points"])))
        report = convert(str(tmp_path / "v.npy"), server.location("docs"),
                         reader_options={"ids": str(tmp_path / "ids.npy")}, workers=2,
                         partition_size=16 << 10, batch_size=500,
                         writer_options={"distance": "Euclid"})
        stored = dump_stream(server.location("docs"))
    assert report["partitions"] > 2 and report["points_in_collection"] == 2990
    assert report["duplicate_ids"]["count"] == 10
    (warning,) = [w for w in report["warnings"] if "occur more than once" in w]
    kept = [stored[("int", i)][0][""][1] for i in range(10)]
    if limit is None:
        assert report["resent_for_order"] == 10
        assert "last written" not in warning
        assert kept == [vec[2990 + i].tobytes() for i in range(10)]
    else:
        assert "resent_for_order" not in report
        assert warning.endswith(
            "a Qdrant target keeps only the last point of each id (here the last written: too "
            "many ids repeat across partitions to send their last records again, so such an id "
            "may keep an earlier record; run with --workers 1 to keep the last one in the "
            "source)")


def test_small_sources_and_limits_stay_single_process(npy_src, tmp_path) -> None:
    report = convert(npy_src["npy"], str(tmp_path / "a") + "/", to_format="parquet",
                     reader_options=npy_src["opts"], workers=2)
    assert "partitions" not in report  # one partition: nothing to spread
    report = convert(npy_src["npy"], str(tmp_path / "b") + "/", to_format="parquet",
                     reader_options=npy_src["opts"], workers=2, partition_size=SMALL,
                     limit=100)
    assert "partitions" not in report and report["written"] == 100
    # a target the driver assembles is partitioned only when workers are asked for
    report = convert(npy_src["jsonl"], str(tmp_path / "c.npy"), partition_size=SMALL)
    assert "partitions" not in report
    # a resume state file belongs to the single-process path
    pytest.importorskip("qdrant_client")
    from qdrant_standin import QdrantStandIn

    with QdrantStandIn() as server:
        report = convert(npy_src["jsonl"], server.location("docs"), workers=2,
                         partition_size=SMALL, state=str(tmp_path / "s.json"),
                         writer_options={"distance": "Euclid"})
    assert "partitions" not in report and report["written"] == N
    assert (tmp_path / "s.json").exists()


def test_existing_output_is_refused_before_any_work(npy_src, tmp_path) -> None:
    from vecferry.errors import OutputExistsError

    (tmp_path / "o").mkdir()
    with pytest.raises(OutputExistsError, match="output exists"):
        convert(npy_src["jsonl"], str(tmp_path / "o") + "/", to_format="parquet", workers=2,
                partition_size=SMALL)
    assert not list((tmp_path).glob(".o.vfparts"))
    from vecferry.errors import UsageError

    with pytest.raises(UsageError, match="output directory does not exist"):
        convert(npy_src["jsonl"], str(tmp_path / "no" / "o") + "/", to_format="parquet",
                workers=2, partition_size=SMALL, overwrite=True)
    assert not (tmp_path / "no").exists()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vecferry", *args]


def _big_jsonl(tmp_path: Path, n: int = 60000) -> Path:
    rng = np.random.default_rng(9)
    np.save(tmp_path / "v.npy", rng.standard_normal((n, 32)).astype(np.float32))
    src = tmp_path / "big.jsonl"
    convert(str(tmp_path / "v.npy"), str(src), workers=1)
    return src


def test_killed_worker_is_retried_without_gaps_or_duplicates(tmp_path) -> None:
    psutil = pytest.importorskip("psutil")
    src = _big_jsonl(tmp_path)
    expected = _digest(str(src))
    out = tmp_path / "out"
    proc = subprocess.Popen(_cli("convert", str(src), str(out) + "/", "--to", "parquet",
                                 "--workers", "2", "--partition-size", "256kB", "--json",
                                 "--quiet"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = tmp_path / ".out.vfparts" / "done"
    killed = None
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and killed is None:
        if done.is_dir() and len(list(done.glob("part-*.json"))) >= 2:
            # the pool's workers are forked by the forkserver, a child of the run
            workers = [w for p in psutil.Process(proc.pid).children()
                       if "forkserver" in " ".join(p.cmdline()) for w in p.children()]
            if workers:
                killed = workers[0].pid
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.01)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr.decode()
    if killed is None:
        pytest.skip("the run ended before a worker could be killed")
    report = json.loads(stdout)
    assert report["retried_partitions"] >= 1
    assert _digest(str(out) + "/") == expected


@pytest.mark.parametrize("target", ["out/", "out.jsonl"])
def test_resume_skips_partitions_already_done(tmp_path, target) -> None:
    src = _big_jsonl(tmp_path)
    expected = _digest(str(src))
    out = f"{tmp_path}/{target}"
    args = ("convert", str(src), out, "--to", "parquet" if target == "out/" else "jsonl",
            "--workers", "2", "--partition-size", "256kB", "--json", "--quiet")
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    stage = tmp_path / f".{target.rstrip('/')}.vfparts"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        # done records only (not the hidden file one is written under)
        if (stage / "done").is_dir() and len(list((stage / "done").glob("part-*.json"))) >= 3:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole run, workers included
            break
        time.sleep(0.01)
    proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run ended before it could be killed")
    assert not Path(out).exists()  # nothing that looks complete
    again = subprocess.run(_cli(*args, "--resume"), capture_output=True, timeout=300)
    assert again.returncode == 0, again.stderr.decode()
    report = json.loads(again.stdout)
    assert report["resumed_partitions"] >= 3
    assert report["written"] == 60000
    assert _digest(out) == expected
    assert not stage.exists()


def test_resume_refuses_a_different_plan(tmp_path, npy_src) -> None:
    from vecferry.errors import UsageError
    from vecferry.scaleout import staging_dir

    out = str(tmp_path / "o") + "/"
    stage = staging_dir(out)
    stage.mkdir()
    (stage / "plan.json").write_bytes(orjson.dumps({"stamp": {"source": "0"}, "partitions": []}))
    with pytest.raises(UsageError, match="made from another source, options or target"):
        convert(npy_src["jsonl"], out, to_format="parquet", workers=2, partition_size=SMALL,
                resume=True)


def test_partitions_load_a_qdrant_server_in_parallel(npy_src, tmp_path) -> None:
    pytest.importorskip("qdrant_client")
    from qdrant_standin import QdrantStandIn

    with QdrantStandIn() as server:
        dst = server.location("docs")
        report = convert(npy_src["jsonl"], dst, workers=2, partition_size=SMALL,
                         writer_options={"distance": "Euclid"})
        assert report["partitions"] > 2 and report["written"] == N
        assert server.engine.count("docs").count == N
        back = str(tmp_path / "back.parquet")
        convert(dst, back, workers=1)
    assert _digest(back) == _digest(npy_src["parquet"])


def test_a_resumed_partitioned_bulk_load_restores_the_m_it_switched_off(npy_src, tmp_path,
                                                                         monkeypatch) -> None:
    pytest.importorskip("qdrant_client")
    from qdrant_client import QdrantClient, models

    from qdrant_standin import Fault, QdrantStandIn
    from vecferry.errors import TargetError

    monkeypatch.chdir(tmp_path)  # the run's parts and state go to the working directory
    monkeypatch.setenv("VECFERRY_RETRY_BASE_DELAY", "0.01")
    with QdrantStandIn() as server:
        dst = server.location("docs")
        client = QdrantClient(url=f"http://127.0.0.1:{server.port}", check_compatibility=False)
        client.create_collection("docs", vectors_config=models.VectorParams(
            size=DIM, distance="Euclid"), hnsw_config=models.HnswConfigDiff(m=32))
        client.close()
        server.hnsw_m["docs"] = 32
        server.add_fault(Fault("update", "503", times=None,
                               when=lambda body: (body.get("hnsw_config") or {}).get("m") == 32))
        opts = {"bulk": True, "distance": "Euclid", "max_retries": 0}
        with pytest.raises(TargetError):
            convert(npy_src["jsonl"], dst, workers=2, partition_size=SMALL, resume=True,
                    writer_options=opts)
        assert server.hnsw_m["docs"] == 0
        server.faults.clear()
        report = convert(npy_src["jsonl"], dst, workers=2, partition_size=SMALL, resume=True,
                         writer_options=opts)
        assert report["resumed_partitions"] == report["partitions"]
        assert server.hnsw_m["docs"] == 32
        assert server.engine.count("docs").count == N


def _foreign_float64_shards(d: Path) -> str:
    """Four Parquet files another tool wrote: float64 vectors, which narrowing changes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d.mkdir()
    for k in range(4):
        ids = list(range(k * 500, (k + 1) * 500))
        emb = [[0.1 * i, 1 / 3, 2.0] for i in ids]
        pq.write_table(pa.table({"doc": ids, "emb": emb}), d / f"{k}.parquet")
    return str(d) + "/"


def test_worker_warnings_reach_the_report(tmp_path) -> None:
    src = _foreign_float64_shards(tmp_path / "shards")
    opts = {"id_column": "doc", "vector_column": "emb"}
    report = convert(src, f"{tmp_path}/o/", from_format="parquet", to_format="parquet",
                     reader_options=opts, workers=2, partition_size=4 << 10)
    assert report["partitions"] == 4
    assert any("changed when narrowed to float32" in w for w in report["warnings"])


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray extra not installed")
def test_ray_engine_equals_local_pool(npy_src, tmp_path) -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = str(tmp_path / "ray") + "/"
        report = convert(npy_src["npy"], out, to_format="parquet",
                         reader_options=npy_src["opts"], engine="ray", partition_size=SMALL)
        assert report["engine"] == "ray" and report["partitions"] > 2
        assert report["written"] == N
        assert _digest(out) == _digest(npy_src["parquet"])
        single = str(tmp_path / "ray.npy")
        report = convert(npy_src["jsonl"], single, engine="ray", partition_size=SMALL)
        assert _digest(single) == _digest(npy_src["parquet"])
        # a task's error reaches the caller as vecferry's own, naming the real line
        lines = Path(npy_src["jsonl"]).read_bytes().splitlines(keepends=True)
        lines[N - 3] = b"not json\n"
        bad = tmp_path / "bad.jsonl"
        bad.write_bytes(b"".join(lines))
        with pytest.raises(RecordError, match=f"line {N - 2}"):
            convert(str(bad), str(tmp_path / "bad") + "/", to_format="parquet", engine="ray",
                    partition_size=SMALL)
        # what a read task warns of (here: float64 values narrowing changed) is reported
        src = _foreign_float64_shards(tmp_path / "shards")
        report = convert(src, f"{tmp_path}/f64/", from_format="parquet", to_format="parquet",
                         reader_options={"id_column": "doc", "vector_column": "emb"},
                         engine="ray", partition_size=4 << 10)
        assert any("changed when narrowed to float32" in w for w in report["warnings"])
        _ray_blocks_are_bounded(ray, npy_src, tmp_path)
    finally:
        ray.shutdown()


def _npy_plan(npy_src, dst: str, *, engine: str = "local", batch_size: int = 1000):
    """The plan and job of a two-worker run of the test matrix into a Parquet directory."""
    from vecferry.scaleout import choose

    reader = open_reader(npy_src["npy"], format="npy", **npy_src["opts"])
    try:
        plan, job, _ = choose(reader, src=npy_src["npy"], src_fmt="npy",
                              reader_options=npy_src["opts"], dst=dst,
                              dst_fmt="parquet", writer_options={}, workers=2, engine=engine,
                              partition_size=SMALL, limit=None, batch_size=batch_size,
                              on_error="fail", check_duplicates=False)
    finally:
        reader.close()
    return plan, job


def _ray_blocks_are_bounded(ray, npy_src, tmp_path) -> None:
    """A read task hands its partition to the write in blocks of about BLOCK_BYTES, not as
    one block held whole; the caller's Ray Data settings are theirs again afterwards."""
    from vecferry import ray_engine

    plan, job = _npy_plan(npy_src, f"{tmp_path}/blocks/", engine="ray", batch_size=100)
    context = ray.data.DataContext.get_current()
    before = context.target_max_block_size, context.enable_progress_bars

    def blocks() -> int:
        source = ray_engine.PlanDatasource(job, plan.partitions)
        read = ray.data.read_datasource(source, override_num_blocks=len(plan.partitions))
        return read.materialize().num_blocks()

    whole = blocks()  # Ray's default target holds a partition this small as one block
    saved, ray_engine.BLOCK_BYTES = ray_engine.BLOCK_BYTES, 8 << 10
    try:
        with ray_engine._data_context():
            bounded = blocks()
    finally:
        ray_engine.BLOCK_BYTES = saved
    assert whole == len(plan.partitions)
    assert bounded > 3 * whole
    assert (context.target_max_block_size, context.enable_progress_bars) == before


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray extra not installed")
def test_ray_engine_is_quiet_with_quiet(npy_src, tmp_path) -> None:
    # a local Ray instance warns on stderr of its default token authentication
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    out = tmp_path / "q"
    run = subprocess.run([sys.executable, "-m", "vecferry", "convert", npy_src["jsonl"],
                          f"{out}/", "--to", "parquet", "--engine", "ray", "--workers", "2",
                          "--partition-size", "64KB", "--quiet"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert _digest(f"{out}/") == _digest(npy_src["parquet"])


def test_engine_usage_errors(npy_src, tmp_path) -> None:
    from vecferry.errors import UsageError

    with pytest.raises(UsageError, match="--limit takes the first points in order"):
        convert(npy_src["jsonl"], str(tmp_path / "a") + "/", to_format="parquet",
                engine="ray", limit=5)
    with pytest.raises(UsageError, match="unknown engine 'spark'"):
        convert(npy_src["jsonl"], str(tmp_path / "b") + "/", to_format="parquet",
                engine="spark")
    with pytest.raises(UsageError, match="--partition-size must be a positive size"):
        convert(npy_src["jsonl"], str(tmp_path / "c") + "/", to_format="parquet",
                partition_size=0, workers=2)
    with pytest.raises(UsageError, match="--partition-size: not a size: 'lots'"):
        convert(npy_src["jsonl"], str(tmp_path / "c") + "/", to_format="parquet",
                partition_size="lots", workers=2)
    with pytest.raises(UsageError, match="--state names the resume state of a single-process"):
        convert(npy_src["jsonl"], str(tmp_path / "d") + "/", to_format="parquet",
                engine="ray", state=str(tmp_path / "s.json"))
    with pytest.raises(UsageError, match="object store location cannot hold"):
        convert(npy_src["jsonl"], "s3://bucket/out/", to_format="parquet", engine="ray")


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray extra not installed")
def test_ray_cluster_that_cannot_be_reached_is_named_at_once(npy_src, tmp_path) -> None:
    """Ray retries an address that refuses connections for many minutes without a word; the
    run stops at once naming the address (the timeout turns a hang into a failure here)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    run = subprocess.run([sys.executable, "-m", "vecferry", "convert", npy_src["jsonl"],
                          f"{tmp_path}/o/", "--to", "parquet", "--engine", "ray",
                          "--ray-address", f"127.0.0.1:{port}", "--workers", "2",
                          "--partition-size", "64KB", "--quiet"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 1
    assert run.stderr == (
        f"error: 127.0.0.1:{port}: cannot reach the Ray cluster: Connection refused (check "
        "--ray-address (or RAY_ADDRESS) and that the cluster is up: `ray status` on its head "
        "node)\n")


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray extra not installed")
@pytest.mark.parametrize("mode", [None, "token"])
def test_ray_cluster_that_refuses_the_driver_says_what_token_it_needs(
        npy_src, tmp_path, monkeypatch, mode) -> None:
    """A cluster with token authentication refuses a driver without its token: Ray's
    ConnectionError says only that it failed; the error says what to set."""
    import socket

    import ray

    from vecferry.errors import EngineError

    def refused(**_: object) -> None:  # what ray.init raises when the GCS refuses the token
        raise ConnectionError("Failed to connect to Ray cluster at 127.0.0.1")

    monkeypatch.setattr(ray, "init", refused)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    if mode:
        monkeypatch.setenv("RAY_AUTH_MODE", mode)
    else:
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with socket.socket() as listener:  # the port answers: the refusal comes after
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(EngineError) as err:
            convert(npy_src["jsonl"], f"{tmp_path}/o/", to_format="parquet", engine="ray",
                    ray_address=address, workers=2, partition_size=SMALL)
    assert err.value.location.source == address
    assert err.value.message == "the Ray cluster did not accept this driver"
    assert err.value.hint == (
        "check the token: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token must hold "
        "the cluster's" if mode else
        "a cluster with token authentication (Ray 2.59 and later turn it on for a cluster "
        "started with `ray start`) needs RAY_AUTH_MODE=token here, and its token in "
        "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token")
    assert isinstance(err.value.__cause__, ConnectionError)


def test_resume_of_a_single_process_file_run_starts_over_and_says_so(npy_src, tmp_path) -> None:
    from click.testing import CliRunner

    from vecferry.cli import main

    out = tmp_path / "one.parquet"
    stale = tmp_path / "one.parquet.rejects.jsonl"
    stale.write_text('{"id": 1, "_vecferry_reject": {"reason": "of an older run"}}\n')
    result = CliRunner().invoke(main, ["convert", npy_src["jsonl"], str(out), "--workers", "1",
                                       "--resume", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["written"] == N and "resumed_from" not in report
    assert report["warnings"] == ["nothing to resume: parquet output written by one process "
                                  "appears whole or not at all, so this run started from the "
                                  "beginning"]
    assert _digest(str(out)) == _digest(npy_src["jsonl"])
    assert not stale.exists()  # not this run's rejects, and it had none


@pytest.mark.parametrize("name,workers", [("one.parquet", "1"), ("parts/", "2")])
def test_resume_of_a_finished_file_output_says_its_run_finished(npy_src, tmp_path, name,
                                                                workers) -> None:
    """A resume never replaces an output: one whose run finished (no staging directory left)
    stops the run with exit 2, saying why and how to check it."""
    from click.testing import CliRunner

    from vecferry.cli import main

    out = f"{tmp_path}/{name}"
    args = ["convert", npy_src["jsonl"], out, "--to", "parquet", "--workers", workers,
            "--partition-size", "64kB", "--quiet"]
    assert CliRunner().invoke(main, args).exit_code == 0
    before = _digest(out)
    result = CliRunner().invoke(main, [*args, "--resume"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {out}: output exists and no interrupted run of it is left to resume: its run "
        f"finished, or another wrote it (check it with: vecferry verify {npy_src['jsonl']} "
        f"{out}; pass --overwrite to write it again)\n")
    assert _digest(out) == before
    assert CliRunner().invoke(main, [*args, "--resume", "--overwrite"]).exit_code == 0


def test_a_single_process_run_removes_the_parts_an_earlier_partitioned_run_left(
        npy_src, tmp_path) -> None:
    from vecferry.scaleout import staging_dir

    out = tmp_path / "out"
    # a partitioned run that fails half way keeps its staging directory for --resume
    bad = tmp_path / "bad.jsonl"
    lines = Path(npy_src["jsonl"]).read_text().splitlines()
    bad.write_text("\n".join([*lines[:N // 2], "{not json", *lines[N // 2:]]) + "\n")
    with pytest.raises(RecordError):
        convert(str(bad), str(out) + "/", to_format="parquet", workers=2, partition_size=SMALL)
    assert staging_dir(str(out) + "/").is_dir() and not out.exists()
    convert(npy_src["jsonl"], str(out) + "/", to_format="parquet", limit=5)
    assert staging_dir(str(out) + "/").is_dir()  # a trial run leaves them for --resume
    convert(npy_src["jsonl"], str(out) + "/", to_format="parquet", workers=1, overwrite=True)
    assert not staging_dir(str(out) + "/").exists()
    assert _digest(str(out)) == _digest(npy_src["jsonl"])


def test_payload_rows_entered_at_marks_keep_rows_and_line_numbers(tmp_path) -> None:
    from vecferry.fileio import MARK_ROWS, PAYLOAD_CHUNK, iter_payload_chunks, payload_marks

    n = MARK_ROWS * 2 + 100
    lines = []
    for i in range(n):
        if i % 1000 == 0:
            lines.append("")  # blank lines are not rows, but they are lines
        lines.append(json.dumps({"row": i}))
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines) + "\n")
    rows, marks = payload_marks(str(path))
    assert rows == n and marks is not None and len(marks) == 3
    for start in (0, 5, MARK_ROWS - 1, MARK_ROWS, MARK_ROWS + 7, 2 * MARK_ROWS + 99):
        chunks = list(iter_payload_chunks(str(path), start, marks))
        assert all(0 < len(c) <= PAYLOAD_CHUNK for c in chunks)
        assert [json.loads(t)["row"] for c in chunks for t in c] == list(range(start, n))
    bad_row = 2 * MARK_ROWS + 10
    lines[lines.index(json.dumps({"row": bad_row}))] = "{oops"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError) as info:
        list(iter_payload_chunks(str(path), 2 * MARK_ROWS + 1, marks))
    # one blank line before every thousandth row: the line number counts them
    assert f"line {bad_row + 1 + bad_row // 1000 + 1}" in str(info.value)


@pytest.mark.parametrize(("bad", "message"), [
    ("[1, 2]", "line 4: payload must be a JSON object, not list"),
    ('{"x": NaN}', "line 4: payload line holds NaN, which JSON cannot express (write null"),
    ('{"x": 1', "line 4: payload line is not JSON"),
])
def test_payload_chunk_names_the_bad_line(tmp_path, bad, message) -> None:
    from vecferry.fileio import iter_payload_chunks

    path = tmp_path / "p.jsonl"
    path.write_text('{"a": 1}\nnull\n\n' + bad + '\n{"b": 2}\n')
    with pytest.raises(RecordError) as info:
        list(iter_payload_chunks(str(path)))
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_payload_chunk_keeps_long_integers_and_the_original_text(tmp_path) -> None:
    from vecferry.fileio import iter_payload_chunks

    path = tmp_path / "p.jsonl"
    big = 2**70 + 1
    path.write_bytes(b'\xef\xbb\xbf{"b": 1,  "a": 2}\nnull\n{"n": ' + str(big).encode()
                     + b'}\n{}\n')
    (chunk,) = list(iter_payload_chunks(str(path)))
    assert chunk == ['{"b": 1,  "a": 2}', None, f'{{"n": {big}}}', "{}"]


def test_a_partition_that_keeps_killing_its_worker_fails_the_run(npy_src, tmp_path) -> None:
    from scaleout_faults import die
    from vecferry.errors import TargetError
    from vecferry.scaleout import MAX_ATTEMPTS, run_local

    plan, job = _npy_plan(npy_src, f"{tmp_path}/o/")
    with pytest.raises(TargetError) as info:
        run_local(job, plan.partitions[:1], 2, task=die)
    assert (f"partition 0 ({plan.partitions[0].spec}) was lost with its worker process "
            f"{MAX_ATTEMPTS} times") in str(info.value)
    assert "run again with --resume" in str(info.value)


def test_a_full_disk_in_a_worker_names_the_output(npy_src, tmp_path) -> None:
    from scaleout_faults import disk_full
    from vecferry.errors import TargetError
    from vecferry.scaleout import _prepare_staging, run_local

    dst = f"{tmp_path}/o/"
    plan, job = _npy_plan(npy_src, dst)
    _prepare_staging(job, plan, resume=False)
    with pytest.raises(TargetError) as info:
        run_local(job, plan.partitions[:1], 2, task=disk_full)
    assert str(info.value) == (f"{dst}: cannot write: No space left on device (free space "
                               "there or write to another place, then run the conversion again)")


def test_ray_engine_without_ray_names_the_extra(monkeypatch) -> None:
    from vecferry.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delitem(sys.modules, "vecferry.ray_engine", raising=False)
    with pytest.raises(MissingDependencyError, match="--engine ray needs Ray Data") as info:
        importlib.import_module("vecferry.ray_engine")
    assert info.value.hint == "pip install 'vecferry[ray]'"


def test_a_second_run_to_the_same_output_does_not_share_the_first_ones_parts(npy_src, tmp_path
                                                                              ) -> None:
    # two partitioned runs wrote into one staging directory: the output mixed both sources
    from vecferry.errors import UsageError
    from vecferry.scaleout import StagingLock, remove_staging, staging_dir

    out = f"{tmp_path}/o/"
    stage = staging_dir(out)
    stage.mkdir()
    (stage / "keep.txt").write_text("the live run's")
    held = StagingLock(stage, out)  # a live run, as far as any other process can tell
    try:
        with pytest.raises(UsageError) as info:
            convert(npy_src["jsonl"], out, to_format="parquet", workers=2,
                    partition_size=SMALL)
        assert str(info.value) == (f"{out}: another run is writing this output (its parts are "
                                   f"in {stage}) (wait for it to finish, or write to another "
                                   "place)")
        # a single-process run of the same output finishes, and leaves the live run's parts
        convert(npy_src["jsonl"], out, to_format="parquet", workers=1)
        remove_staging(out)
        assert (stage / "keep.txt").exists()
    finally:
        held.release()
    remove_staging(out)
    assert not stage.exists() and not Path(f"{stage}.lock").exists()


def test_partitions_load_an_embedded_collection(npy_src, tmp_path) -> None:
    # the file-output check took qdrant-local://PATH/C for a path: 'qdrant-local:/...' missing
    pytest.importorskip("qdrant_client")
    dst = f"qdrant-local://{tmp_path / 'q'}/docs"
    report = convert(npy_src["npy"], dst, workers=2, partition_size=SMALL,
                     writer_options={"distance": "Euclid"}, reader_options=npy_src["opts"])
    assert report["partitions"] > 1 and report["points_in_collection"] == N
    back = str(tmp_path / "back.parquet")
    convert(dst, back, workers=1)
    assert _digest(back) == _digest(npy_src["parquet"])


def test_a_partitioned_run_that_did_no_part_leaves_no_staging(npy_src, tmp_path) -> None:
    from vecferry.errors import UsageError
    from vecferry.scaleout import staging_dir

    out = str(tmp_path / "o.parquet")
    with pytest.raises(UsageError, match="does not take option"):
        convert(npy_src["jsonl"], out, workers=2, partition_size=SMALL,
                writer_options={"bulk": True})
    assert not staging_dir(out).exists() and not Path(f"{staging_dir(out)}.lock").exists()


@pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="needs faiss")
def test_target_rejects_of_a_repeated_id_are_each_kept_in_a_partitioned_run(tmp_path) -> None:
    """Two records of one id the target refuses for one reason are two rejects: the driver's
    rejects file, appended to, took the second for the first written again (its note names
    only the id), leaving it out of the file and counting it as written."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "v.npy", rng.standard_normal((4000, 8)).astype(np.float32))
    ids = np.arange(4000, dtype=np.uint64)
    ids[5] = ids[3900] = 2**63 + 1  # past FAISS's int64 ids: the index refuses both
    np.save(tmp_path / "ids.npy", ids)
    reports = {}
    for workers in (1, 2):
        rejects = tmp_path / f"rej{workers}.jsonl"
        reports[workers] = convert(str(tmp_path / "v.npy"), str(tmp_path / f"o{workers}.faiss"),
                                   reader_options={"ids": str(tmp_path / "ids.npy")},
                                   workers=workers, partition_size="16KB", on_error="skip",
                                   rejects=str(rejects))
        lines = [json.loads(x) for x in rejects.read_text().splitlines()]
        assert [x["id"] for x in lines] == [2**63 + 1, 2**63 + 1]
        assert lines[0]["vector"] != lines[1]["vector"]
    assert reports[2].get("partitions", 2) >= 2
    for r in reports.values():
        assert (r["written"], r["rejected"]) == (3998, 2)


def test_a_rejects_line_holding_a_lone_surrogate_is_written_escaped(tmp_path) -> None:
    """A payload key or text with a lone surrogate has no UTF-8: the rejects line escapes it
    (it crashed with UnicodeEncodeError), and reading the line back gives the same string."""
    from vecferry.errors import Location, RecordError
    from vecferry.fileio import loads_reject_line
    from vecferry.pipeline import RejectsFile

    path = tmp_path / "r.jsonl"
    sink = RejectsFile(path)
    sink(RecordError("payload key holds a lone surrogate", location=Location("s.pkl", row=3),
                     raw={"id": 7, "payload": {"\ud800key": float("nan"), "t": "a\udc00b"}}))
    sink.close()
    (line,) = path.read_bytes().splitlines()
    assert b"\\ud800key" in line and b"NaN" in line
    back = loads_reject_line(line)
    assert list(back["payload"]) == ["\ud800key", "t"] and back["payload"]["t"] == "a\udc00b"


@pytest.mark.parametrize("kind", ["npy", "mapped-parquet"])
def test_a_partitioned_run_counts_narrowed_float64_values_once(tmp_path, kind) -> None:
    """Each partition counts the values it narrowed (a worker's reader, kept for its next
    partition, counted on and warned each time: dozens of running totals); the run reports
    one sum, the single-process count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    mat = np.random.default_rng(0).standard_normal((20000, 8))
    mat[::7] = np.round(mat[::7])  # whole numbers narrow exactly: not every value changes
    if kind == "npy":
        src = str(tmp_path / "f64.npy")
        np.save(src, mat)
        opts: dict = {}
    else:
        src = str(tmp_path / "shards")  # another tool's files: partitioned file by file
        Path(src).mkdir()
        for i in range(4):
            pq.write_table(pa.table({"emb": list(mat[i * 5000:(i + 1) * 5000])}),
                           f"{src}/{i}.parquet")
        opts = {"vector_column": ["emb"]}
    changed = int(np.count_nonzero(mat.astype(np.float32).astype(np.float64) != mat))
    want = f"{changed} float64 value(s) changed when narrowed to float32"
    for workers in (1, 2):
        report = convert(src, f"{tmp_path}/o{workers}/", to_format="parquet",
                         workers=workers, partition_size="32KB", reader_options=opts)
        counts = [w for w in report["warnings"] if "changed when narrowed" in w]
        assert counts == [want], (workers, report["warnings"])
    assert report["partitions"] > 2


def test_a_failed_partitioned_run_says_its_parts_are_kept_for_resume(npy_src, tmp_path) -> None:
    from vecferry.scaleout import staging_dir

    out = str(tmp_path / "out") + "/"
    bad = tmp_path / "bad.jsonl"
    lines = Path(npy_src["jsonl"]).read_text().splitlines()
    bad.write_text("\n".join([*lines[:N - 10], "{not json", *lines[N - 10:]]) + "\n")
    with pytest.raises(RecordError) as info:
        convert(str(bad), out, to_format="parquet", workers=2, partition_size=SMALL)
    assert str(info.value).endswith(
        f"; the finished parts are kept in {staging_dir(out)}: with the source unchanged, run "
        "again with --resume to do only the rest (for a bad record, with --on-error skip, which "
        "puts it in the rejects file); a fixed source starts over)")
    assert "line is not valid JSON" in str(info.value)
