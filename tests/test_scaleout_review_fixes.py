"""Partitioned runs, after review: the counts and rejects file of a resumed run into an
assembled target whose writer refuses records; a resumed run's rejects file holds only the
load's rejects (never those of an earlier finished run again); a dead worker costs an attempt
only to the partitions that were running in it; Ray keeps stdout for the report and retries a
lost task 3 times in all; absurdly small partition sizes are refused; the report keeps the
run's engine and, resumed, gives the whole load's counts; a failed run's hint about --resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest
from click.testing import CliRunner

import vecferry
from vecferry import open_reader
from vecferry.cli import main
from vecferry.errors import RecordError, UsageError

N, DIM = 1200, 8
PARTS = {"workers": 2, "partition_size": "16KB"}
BIG = 10  # ids past 2^63 at the start of the source, which a FAISS index cannot hold


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _src(tmp_path: Path, *, big: int = 0, bad: tuple[int, ...] = (), n: int = N) -> Path:
    rng = np.random.default_rng(7)
    src = tmp_path / "src.jsonl"
    with open(src, "w") as f:
        for i in range(n):
            if i in bad:
                f.write("{not json\n")
                continue
            pid = 2**63 + i if i < big else i + 1
            f.write(json.dumps({"id": pid, "vector": rng.standard_normal(DIM).tolist(),
                                "payload": {"i": i}}) + "\n")
    return src


class _InterruptLate:
    """A progress bar that is a Ctrl-C in the run's own thread once every part is done,
    after the assembling thread has had time to take them all."""

    total: int | None = None

    def update(self, n: int) -> None:
        if n and threading.current_thread() is threading.main_thread():
            time.sleep(1.5)
            raise KeyboardInterrupt

    def refresh(self) -> None:
        # the watch's thread may have counted every part already: the last look, in the
        # run's own thread, ends with this
        if threading.current_thread() is threading.main_thread():
            time.sleep(1.5)
            raise KeyboardInterrupt

    def close(self) -> None:
        pass


class _Interrupting(_InterruptLate):
    """A Ctrl-C in the run's own thread at its first progress update there, or, when the
    watch's thread counted every part first (a loaded machine), at the last look."""

    def update(self, n: int) -> None:
        if n and threading.current_thread() is threading.main_thread():
            raise KeyboardInterrupt

    def refresh(self) -> None:
        if threading.current_thread() is threading.main_thread():
            raise KeyboardInterrupt


def _lines(path: Path) -> int:
    return len(path.read_bytes().splitlines())


# -- 1 and 6b. a resumed assembled target counts its writer's rejects truly -------------------

def test_a_resumed_faiss_run_counts_what_its_writer_refused(tmp_path: Path) -> None:
    src = _src(tmp_path, big=BIG)
    dst = "out.faiss"
    with pytest.raises(KeyboardInterrupt):
        vecferry.convert(src, dst, on_error="skip", progress=_InterruptLate(), **PARTS)
    driver = Path(".out.faiss.vfparts/rejects/~driver.write.jsonl")
    assert _lines(driver) == BIG  # what the interrupted run's writer refused
    report = vecferry.convert(src, dst, on_error="skip", resume=True, **PARTS)
    index = faiss.read_index(dst)
    assert index.ntotal == N - BIG
    assert _lines(Path("out.faiss.rejects.jsonl")) == BIG
    assert report["written_total"] == N - BIG
    assert report["rejected_total"] == BIG
    assert report["resumed_partitions"] == report["partitions"]
    assert (report["read"], report["written"], report["rejected"]) == (N, N - BIG, BIG)
    assert report["rejects_file"] == "out.faiss.rejects.jsonl"


def test_the_cli_exits_3_for_a_resumed_load_that_rejected_records(tmp_path: Path) -> None:
    src = _src(tmp_path, big=BIG)
    with pytest.raises(KeyboardInterrupt):
        vecferry.convert(src, "out.faiss", on_error="skip", progress=_InterruptLate(), **PARTS)
    result = CliRunner().invoke(main, ["convert", str(src), "out.faiss", "--on-error", "skip",
                                       "--workers", "2", "--partition-size", "16KB",
                                       "--resume", "--json"], catch_exceptions=False)
    assert result.exit_code == 3, result.output
    report = json.loads(result.stdout)
    assert (report["written_total"], report["rejected_total"]) == (N - BIG, BIG)


def test_a_partitioned_resume_reports_the_whole_load(tmp_path: Path) -> None:
    bad = (3, 700, 1100)
    src = _src(tmp_path, bad=bad)
    with pytest.raises(KeyboardInterrupt):
        vecferry.convert(src, "out/", to_format="parquet", on_error="skip",
                         progress=_Interrupting(), workers=2, partition_size="8KB")
    done = {p.name for p in Path(".out.vfparts/done").glob("*.json")}
    assert done
    report = vecferry.convert(src, "out/", to_format="parquet", on_error="skip", resume=True,
                              workers=2, partition_size="8KB")
    assert report["written_total"] == N - len(bad)
    assert report["rejected_total"] == len(bad)
    assert (report["written"], report["rejected"]) == (N - len(bad), len(bad))
    assert _lines(Path("out.rejects.jsonl")) == len(bad)


# -- 2. a resume does not add to an earlier finished run's rejects ----------------------------

def test_a_resumed_run_replaces_the_rejects_of_an_earlier_finished_run(tmp_path: Path) -> None:
    bad = (3, 700, 1100)
    src = _src(tmp_path, bad=bad)
    first = vecferry.convert(src, "out/", to_format="parquet", on_error="skip",
                             workers=2, partition_size="8KB")
    assert first["rejected"] == len(bad)
    rejects = Path("out.rejects.jsonl")
    assert _lines(rejects) == len(bad)
    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            vecferry.convert(src, "out/", to_format="parquet", on_error="skip",
                             overwrite=True, progress=_Interrupting(), workers=2,
                             partition_size="8KB")
        report = vecferry.convert(src, "out/", to_format="parquet", on_error="skip",
                                  overwrite=True, resume=True, workers=2,
                                  partition_size="8KB")
        assert report["rejected_total"] == len(bad)
        assert _lines(rejects) == len(bad)  # was 6, then 9


def test_a_resumed_run_that_rejects_nothing_removes_an_older_rejects_file(tmp_path: Path
                                                                         ) -> None:
    src = _src(tmp_path)
    stale = Path("out.rejects.jsonl")
    stale.write_text('{"id": 1, "_vecferry_reject": {"reason": "old"}}\n')
    with pytest.raises(KeyboardInterrupt):
        vecferry.convert(src, "out/", to_format="parquet", progress=_Interrupting(),
                         workers=2, partition_size="8KB")
    report = vecferry.convert(src, "out/", to_format="parquet", resume=True, workers=2,
                              partition_size="8KB")
    assert report["rejected_total"] == 0 and report["rejects_file"] is None
    assert not stale.exists()


# -- 3. one dead worker is one lost partition, not every pending one --------------------------

def _plan(tmp_path: Path, dst: str) -> tuple[Any, Any]:
    from vecferry.scaleout import _prepare_staging, choose

    src = _src(tmp_path)
    reader = open_reader(str(src), format="jsonl")
    try:
        plan, job, _ = choose(reader, src=str(src), src_fmt="jsonl", reader_options={},
                              dst=dst, dst_fmt="parquet", writer_options={}, workers=2,
                              engine="local", partition_size="4KB", limit=None,
                              batch_size=100, on_error="fail", check_duplicates=False)
    finally:
        reader.close()
    _prepare_staging(job, plan, resume=False)
    return plan, job


def die_once_in(job: Any, partition: Any) -> Any:
    """Kill the worker the first time it runs a partition listed in ``$VF_DIE_IN``."""
    from vecferry.scaleout import run_partition

    mark = Path(job.staging).with_name(f"died-{partition.index}")
    if str(partition.index) in os.environ["VF_DIE_IN"].split(",") and not mark.exists():
        mark.touch()
        os._exit(9)
    return run_partition(job, partition)


def test_one_dead_worker_retries_only_what_was_running(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from vecferry.scaleout import run_local

    plan, job = _plan(tmp_path, f"{tmp_path}/o/")
    assert len(plan.partitions) > 10
    monkeypatch.setenv("VF_DIE_IN", "2")
    retried = run_local(job, plan.partitions, 2, task=die_once_in)
    # the partition that died, and at most the one the other worker was running
    assert 1 <= retried <= 2
    assert len(list((job.root / "done").glob("*.json"))) == len(plan.partitions)


def test_three_unrelated_worker_deaths_do_not_fail_the_run(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    from vecferry.scaleout import run_local

    plan, job = _plan(tmp_path, f"{tmp_path}/o/")
    monkeypatch.setenv("VF_DIE_IN", "4,8,12")
    retried = run_local(job, plan.partitions, 2, task=die_once_in)
    # each death: its own partition, the other worker's, and at most one more that worker
    # took up before the pool was seen broken (the count was every partition pending before)
    assert 3 <= retried <= 9 < len(plan.partitions)
    assert len(list((job.root / "done").glob("*.json"))) == len(plan.partitions)


# -- 5. a partition size too small for the source is refused ----------------------------------

def test_a_one_byte_partition_size_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "big.jsonl"
    line = b'{"id": 1, "vector": [0.5]}\n'
    src.write_bytes(line * 8000)  # 216,000 bytes: 216,000 one-byte partitions
    with pytest.raises(UsageError) as info:
        vecferry.convert(src, "out/", to_format="parquet", workers=2, partition_size="1")
    assert str(info.value) == (
        f"{src}: --partition-size 1 cuts the source into 216,000 partitions, more than the "
        "100,000 a run takes: the smallest size for this source is 3 B (3 bytes) (a size is "
        "in bytes unless it has a unit: e.g. 64MB)")
    assert not Path(".out.vfparts").exists()


def test_the_cli_refuses_a_partition_size_without_its_unit(tmp_path: Path) -> None:
    src = tmp_path / "big.jsonl"
    src.write_bytes(b'{"id": 1, "vector": [0.5]}\n' * 8000)
    result = CliRunner().invoke(main, ["convert", str(src), "out/", "--to", "parquet",
                                       "--workers", "2", "--partition-size", "1"])
    assert result.exit_code == 2
    assert "--partition-size 1 cuts the source into 216,000 partitions" in result.output
    assert "a size is in bytes unless it has a unit: e.g. 64MB" in result.output


# -- 6a. the run's engine is reported, not an embedded collection's ---------------------------

def test_a_partitioned_run_into_qdrant_edge_reports_its_engine(tmp_path: Path) -> None:
    src = _src(tmp_path)
    report = vecferry.convert(src, f"qdrant-edge://{tmp_path}/edge", **PARTS)
    assert (report["engine"], report["writer_engine"]) == ("local", "edge")
    assert report["partitions"] > 1


# -- 6c. the hint of a failed run says what --resume can do -----------------------------------

def test_a_bad_record_says_resume_skips_with_the_source_unchanged(tmp_path: Path) -> None:
    from vecferry.scaleout import staging_dir

    src = _src(tmp_path, bad=(N - 10,))
    with pytest.raises(RecordError) as info:
        vecferry.convert(src, "out/", to_format="parquet", workers=2, partition_size="8KB")
    assert str(info.value).endswith(
        f"; the finished parts are kept in {staging_dir('out/')}: with the source unchanged, "
        "run again with --resume to do only the rest (for a bad record, with --on-error skip, "
        "which puts it in the rejects file); a fixed source starts over)")


# -- 4. Ray: stdout holds only the report; a lost task is tried 3 times -----------------------

RAY_DIES = """
import os, sys
from vecferry.cli import main
import vecferry.ray_engine as engine


class DyingSink(engine.PartsDatasink):
    # the worker of partition 1's first write dies, as one killed for its memory does
    def write(self, blocks, ctx):
        mark = os.path.join(os.path.dirname(self.job.staging), "died")
        if not os.path.exists(mark):
            open(mark, "w").close()
            os._exit(9)
        return super().write(blocks, ctx)


engine.PartsDatasink = DyingSink
sys.exit(main())
"""


def test_ray_keeps_stdout_for_the_json_report_when_a_worker_dies(tmp_path: Path) -> None:
    src = _src(tmp_path)
    script = tmp_path / "run.py"
    script.write_text(RAY_DIES)
    env = {**os.environ, "RAY_ADDRESS": ""}
    run = subprocess.run([sys.executable, str(script), "convert", str(src), "out/", "--to",
                          "parquet", "--engine", "ray", "--workers", "2", "--partition-size",
                          "16KB", "--json"], capture_output=True, text=True, timeout=500,
                         env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)  # nothing of Ray's before it
    assert report["written"] == N and report["engine"] == "ray"


def test_ray_tasks_are_tried_3_times_in_all() -> None:
    from vecferry.ray_engine import TASK_ARGS

    assert TASK_ARGS == {"max_retries": 2}


RAY_ALWAYS_DIES = """
import os, sys, uuid
from vecferry.cli import main
import vecferry.ray_engine as engine


class DyingSink(engine.PartsDatasink):
    # every attempt of every write dies, leaving a mark to count them by
    def write(self, blocks, ctx):
        open(os.path.join(os.path.dirname(self.job.staging), "try-" + uuid.uuid4().hex),
             "w").close()
        os._exit(9)


engine.PartsDatasink = DyingSink
sys.exit(main())
"""


def test_a_ray_task_that_keeps_killing_its_worker_fails_after_3_attempts(tmp_path: Path
                                                                        ) -> None:
    src = _src(tmp_path, n=50)  # one partition: one task
    script = tmp_path / "run.py"
    script.write_text(RAY_ALWAYS_DIES)
    env = {**os.environ, "RAY_ADDRESS": ""}
    run = subprocess.run([sys.executable, str(script), "convert", str(src), "out/", "--to",
                          "parquet", "--engine", "ray", "--workers", "2", "--json"],
                         capture_output=True, text=True, timeout=500, env=env, cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    assert report["message"] == "a Ray task was lost with its worker process 3 times"
    assert str(src) in json.dumps(report["location"])
    assert len(list(tmp_path.glob("try-*"))) == 3
