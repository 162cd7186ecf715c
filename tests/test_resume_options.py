"""``--resume`` after review: a partitioned load into a collection that finished leaves the
state a single-process load leaves, so the same command run again with ``--resume`` sends
nothing (it sent every point again, undoing edits made to the collection since); and a
resume whose options change what is written (``--distance``, ``--id-field``, a mapping) is
refused naming them, single-process and partitioned (the output mixed both settings); a
resumed load reports the whole load's rejects; and the worker processes of a partitioned run
read a remote source with the caller's storage options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vecferry
from failing import fails
from vecferry.errors import UsageError
from vecferry.pipeline import default_state_path

pytest.importorskip("qdrant_client")

from qdrant_standin import QdrantStandIn

N, DIM = 1200, 8


def _src(tmp_path: Path, ids: Any = None) -> Path:
    rng = np.random.default_rng(1)
    src = tmp_path / "src.jsonl"
    with open(src, "w") as f:
        for i in range(N):
            pid = ids[i] if ids is not None else i + 1
            f.write(json.dumps({"id": pid, "vector": rng.standard_normal(DIM).tolist(),
                                "payload": {"i": i}}) + "\n")
    return src


def _edit_point_1(client: Any, name: str) -> None:
    client.set_payload(name, payload={"edited": True}, points=[1])


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a collection's staging directory and state file are made in the working directory
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VECFERRY_RETRY_BASE_DELAY", "0.01")


def test_a_finished_partitioned_load_into_a_server_sends_nothing_again(tmp_path: Path) -> None:
    src = _src(tmp_path)
    with QdrantStandIn() as server:
        dst = server.location("c")
        options = {"workers": 2, "partition_size": "16KB", "resume": True}
        first = vecferry.convert(src, dst, **options)
        assert first["partitions"] > 1 and first["written"] == N
        assert json.loads(Path(default_state_path(dst)).read_text())["done"] is True
        _edit_point_1(server.engine, "c")
        again = vecferry.convert(src, dst, **options)
        assert (again["read"], again["written"], again["written_total"]) == (0, 0, N)
        assert server.engine.retrieve("c", [1])[0].payload == {"i": 0, "edited": True}


def test_a_finished_partitioned_load_into_local_mode_sends_nothing_again(
        tmp_path: Path) -> None:
    from qdrant_client import QdrantClient

    src = _src(tmp_path)
    dst = f"qdrant-local://{tmp_path / 'q'}/c"
    options = {"workers": 2, "partition_size": "16KB", "resume": True}
    assert vecferry.convert(src, dst, **options)["partitions"] > 1
    client = QdrantClient(path=str(tmp_path / "q"))
    try:
        _edit_point_1(client, "c")
    finally:
        client.close()
    again = vecferry.convert(src, dst, **options)
    assert (again["written"], again["written_total"]) == (0, N)
    client = QdrantClient(path=str(tmp_path / "q"))
    try:
        assert client.retrieve("c", [1])[0].payload == {"i": 0, "edited": True}
    finally:
        client.close()


def test_a_partitioned_resume_with_other_options_is_refused(tmp_path: Path) -> None:
    src = _src(tmp_path)
    out = tmp_path / "pd"
    # a staging directory as an interrupted run leaves it: its plan, no part done yet
    with pytest.raises(KeyboardInterrupt):
        vecferry.convert(src, f"{out}/", to_format="parquet", workers=2,
                         partition_size="16KB", writer_options={"distance": "Cosine"},
                         progress=_Interrupting())
    staging = tmp_path / ".pd.vfparts"
    assert (staging / "plan.json").is_file()
    text = fails(UsageError, lambda: vecferry.convert(
        src, f"{out}/", to_format="parquet", workers=2, partition_size="16KB", resume=True,
        writer_options={"distance": "Dot"}))
    assert text == (f"{staging}: the run this would resume wrote with other options: "
                    "--distance changed (resume with the options of that run; or, to write "
                    "with the new ones, run without --resume (with --overwrite or --mode "
                    "overwrite to replace what it wrote))")
    # the same options resume
    report = vecferry.convert(src, f"{out}/", to_format="parquet", workers=2,
                              partition_size="16KB", resume=True,
                              writer_options={"distance": "Cosine"})
    assert report["written"] == N and report["warnings"] == []


class _Interrupting:
    """A progress bar whose first update is a Ctrl-C: the run stops once it has begun."""

    total: int | None = None

    def update(self, n: int) -> None:
        if n:
            raise KeyboardInterrupt

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_single_process_resume_with_another_id_field_is_refused(tmp_path: Path) -> None:
    ids = [f"doc-{i}" for i in range(N)]
    src = _src(tmp_path, ids)
    dst = f"qdrant-local://{tmp_path / 'q'}/s"
    state = tmp_path / "state.json"
    vecferry.convert(src, dst, resume=True, state=str(state), limit=500, workers=1)
    text = fails(UsageError, lambda: vecferry.convert(
        src, dst, resume=True, state=str(state), workers=1,
        writer_options={"id_field": "orig"}))
    assert text.startswith(f"{state}: the run this would resume wrote with other options: "
                           "--id-field changed")
    report = vecferry.convert(src, dst, resume=True, state=str(state), workers=1,
                              writer_options={"parallel": 2})
    assert (report["resumed_from"], report["written_total"]) == (500, N)


def _with_bad_lines(tmp_path: Path, bad: set[int]) -> Path:
    src = _src(tmp_path)
    lines = src.read_text().splitlines()
    for i in bad:  # a vector of another size: a bad record
        lines[i] = json.dumps({"id": i + 1, "vector": [0.5] * (DIM + 1)})
    src.write_text("\n".join(lines) + "\n")
    return src


def test_a_resumed_load_reports_the_rejects_of_the_whole_load(tmp_path: Path) -> None:
    src = _with_bad_lines(tmp_path, {10, 900})
    dst = f"qdrant-local://{tmp_path / 'q'}/r"
    state = str(tmp_path / "state.json")
    options = {"resume": True, "state": state, "workers": 1, "on_error": "skip"}
    # the first run may reject records past its limit that it parsed ahead (line 901)
    first = vecferry.convert(src, dst, limit=500, **options)
    again = vecferry.convert(src, dst, **options)
    assert first["rejected"] + again["rejected"] == again["rejected_total"] == 2
    assert (again["written_total"], again["rejects_file"]) == (N - 2, first["rejects_file"])
    rejected = [json.loads(line)["id"] for line in
                Path(again["rejects_file"]).read_text().splitlines()]
    assert rejected == [11, 901]


def test_a_resumed_load_exits_3_when_only_the_run_it_resumed_rejected(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from vecferry.cli import main

    src = _with_bad_lines(tmp_path, {10})
    dst = f"qdrant-local://{tmp_path / 'q'}/r"
    state = str(tmp_path / "state.json")
    flags = ["--resume", "--state", state, "--workers", "1", "--on-error", "skip", "--json"]
    first = CliRunner().invoke(main, ["convert", str(src), dst, "--limit", "500", *flags])
    assert first.exit_code == 3, first.output
    again = CliRunner().invoke(main, ["convert", str(src), dst, *flags])
    report = json.loads(again.stdout)
    assert (report["rejected"], report["rejected_total"]) == (0, 1)
    assert report["rejects_file"] is not None
    assert again.exit_code == 3


def test_a_partitioned_run_of_a_remote_source_keeps_the_storage_options(
        tmp_path: Path, opts: dict, s3: Any, bucket: str) -> None:
    # the worker processes read the bucket at the endpoint given, not the provider's default
    prefix = f"{bucket}/export"
    rng = np.random.default_rng(2)
    for part in range(3):
        s3.pipe(f"{prefix}/part-{part}.jsonl", "".join(
            json.dumps({"id": part * 1000 + i, "vector": rng.standard_normal(DIM).tolist()})
            + "\n" for i in range(400)).encode())
    report = vecferry.convert(f"s3://{prefix}", tmp_path / "o.jsonl", from_format="jsonl",
                              storage_options=opts, workers=2, partition_size="16KB")
    assert report["partitions"] > 1 and report["written"] == 1200
