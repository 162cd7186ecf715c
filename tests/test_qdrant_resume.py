"""Resume after SIGKILL: a real ``vecferry convert --resume`` subprocess killed at a random
moment, started again, ends with every point exactly once and says where it resumed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qdrant_client")
qe = pytest.importorskip("qdrant_edge")

from qdrant_helpers import dump_edge, dump_local  # noqa: E402

N_POINTS = 1200


def make_edge_source(path: Path, n: int = N_POINTS) -> dict:
    rng = np.random.default_rng(3)
    shard = qe.EdgeShard.create(str(path), qe.EdgeConfig(vectors={
        "d": qe.EdgeVectorParams(size=8, distance=qe.Distance.Euclid)}))
    vectors = rng.standard_normal((n, 8)).astype(np.float32)
    points = [qe.Point(i * 3 + 1, {"d": vectors[i]}, {"i": i}) for i in range(n)]
    shard.update(qe.UpdateOperation.upsert_points(points))
    shard.flush()
    shard.close()
    return dump_edge(path)


def run(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "VECFERRY_RETRY_BASE_DELAY": "0.01"}
    return subprocess.Popen([sys.executable, "-m", "vecferry", "convert", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_sigkill_then_resume_has_no_gaps_and_no_duplicates(tmp_path: Path, seed: int) -> None:
    # local mode commits every point to SQLite (qdrant-client's persistence), so it gets a
    # smaller collection
    target_edge = seed != 3
    n = N_POINTS if target_edge else 300
    source = tmp_path / "src"
    want = make_edge_source(source, n)
    dst = (f"qdrant-edge://{tmp_path / 'dst'}" if target_edge
           else f"qdrant-local://{tmp_path / 'dst'}/docs")
    args = [f"qdrant-edge://{source}", dst, "--resume", "--state", str(tmp_path / "state.json"),
            "--batch-size", "20", "--json", "--quiet"]
    rng = random.Random(seed)
    proc = run(args)
    time.sleep(rng.uniform(1.0, 3.0))  # imports take ~1 s: kill mid-load or near the end
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads((tmp_path / "state.json").read_text())["position"] \
        if (tmp_path / "state.json").exists() else 0
    finished = subprocess.run([sys.executable, "-m", "vecferry", "convert", *args],
                              capture_output=True, timeout=120,
                              env={**os.environ, "VECFERRY_RETRY_BASE_DELAY": "0.01"})
    meta = tmp_path / "dst" / "meta.json"
    if not target_edge and meta.exists() and not _parses(meta):
        # the kill landed while qdrant-client rewrote meta.json, which it does in place:
        # nothing can resume that folder, and the run says so instead of a traceback
        assert finished.returncode == 1
        assert "the local-mode folder's meta.json is not valid JSON" in finished.stderr.decode()
        assert "Traceback" not in finished.stderr.decode()
        return
    assert finished.returncode == 0, finished.stderr.decode()[-2000:]
    report = json.loads(finished.stdout)
    assert report.get("resumed_from", 0) == killed_at
    assert report["points_in_collection"] == n
    got = dump_edge(tmp_path / "dst") if target_edge else dump_local(tmp_path / "dst")
    assert got == want


def test_resume_without_state_starts_from_the_beginning(tmp_path: Path) -> None:
    import vecferry

    source = tmp_path / "src"
    want = make_edge_source(source)
    report = vecferry.convert(f"qdrant-edge://{source}", f"qdrant-edge://{tmp_path / 'dst'}",
                              resume=True, state=str(tmp_path / "none-yet.json"))
    assert "resumed_from" not in report and report["points_in_collection"] == N_POINTS
    assert dump_edge(tmp_path / "dst") == want


def _parses(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except ValueError:
        return False
    return True


def test_a_local_mode_folder_with_a_cut_meta_json_is_named(tmp_path: Path) -> None:
    import vecferry
    from vecferry.errors import InputError, TargetError

    folder = tmp_path / "q"
    src = tmp_path / "p.jsonl"
    src.write_text('{"id": 1, "vector": [1.0, 2.0]}\n')
    vecferry.convert(str(src), f"qdrant-local://{folder}/docs",
                     writer_options={"distance": "Dot"})
    (folder / "meta.json").write_text('{"collections": {"docs": {"vectors"')
    for err, call in ((TargetError, lambda: vecferry.convert(
            str(src), f"qdrant-local://{folder}/docs", writer_options={"distance": "Dot"})),
                      (InputError, lambda: vecferry.open_reader(
                          f"qdrant-local://{folder}/docs"))):
        with pytest.raises(err) as info:
            call()
        assert str(info.value).startswith(
            f"{folder}: the local-mode folder's meta.json is not valid JSON (")
        assert str(info.value).endswith(
            "it was cut short, most likely by a process killed while qdrant-client rewrote it "
            "(qdrant-client cannot open the folder so: restore meta.json from a copy, or "
            "delete the folder and load it again)")
