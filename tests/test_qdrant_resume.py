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
