"""Ctrl-C and SIGTERM during a partitioned run on the local process pool.

A terminal sends Ctrl-C to the whole process group: the run, the forkserver and every worker.
The run must end promptly with its own message and exit status (no worker left waiting on a
queue another one died holding, no traceback from a process caught starting), and keep the
parts it finished for ``--resume``, which then completes the output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vecferry.parallel import _interrupts_held, stop_pool, worker_pool
from vecferry.pipeline import convert
from vecferry.verification import verify

N, DIM = 30000, 16
#: partitions of about 100 kB: some 75 of them, so a run is still working when signalled
PARTITION = "100KB"
#: seconds a signalled run may take to exit, its workers and forkserver included
PROMPT = 30


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JSONL file of ``N`` points, big enough to cut into many partitions."""
    d = tmp_path_factory.mktemp("interrupt")
    rng = np.random.default_rng(11)
    np.save(d / "v.npy", rng.standard_normal((N, DIM)).astype(np.float32))
    src = d / "big.jsonl"
    convert(str(d / "v.npy"), str(src), workers=1)
    return src


def _digest(location: str) -> tuple[int, str]:
    found = verify(location)["source"]
    return found["count"], found["digest"]


def _convert_args(src: Path, out: str) -> list[str]:
    return [sys.executable, "-m", "vecferry", "convert", str(src), out, "--to", "parquet",
            "--workers", "2", "--partition-size", PARTITION, "--quiet"]


def _signal_when_working(proc: subprocess.Popen[bytes], stage: Path, parts_done: int,
                         delay: float, signum: int) -> bool:
    """Send ``signum`` to the run's process group, as a terminal or ``timeout`` does, once its
    staging directory holds ``parts_done`` finished parts, ``delay`` seconds later. False when
    the run ended first."""
    done = stage / "done"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        # finished parts only, not the hidden file a record is written under first
        if stage.is_dir() and (parts_done == 0 or (
                done.is_dir() and len(list(done.glob("part-*.json"))) >= parts_done)):
            time.sleep(delay)
            os.killpg(proc.pid, signum)
            return True
        time.sleep(0.005)
    return False


@pytest.mark.parametrize("parts_done,delay,signum", [
    # the pool starting: its forkserver importing, its first workers forking
    (0, 0.1, signal.SIGINT),
    (0, 0.2, signal.SIGINT),
    (1, 0.0, signal.SIGINT),
    (4, 0.0, signal.SIGINT),
    (2, 0.0, signal.SIGTERM),
], ids=["int-starting", "int-forking", "int-1-part", "int-4-parts", "term-2-parts"])
def test_a_signalled_pool_run_exits_promptly_and_resumes(source: Path, tmp_path: Path,
                                                         parts_done: int, delay: float,
                                                         signum: int) -> None:
    code, said = (130, "interrupted") if signum == signal.SIGINT else (143, "terminated")
    out = f"{tmp_path}/out/"
    stage = tmp_path / ".out.vfparts"
    proc = subprocess.Popen(_convert_args(source, out), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        signalled = _signal_when_working(proc, stage, parts_done, delay, signum)
        sent = time.monotonic()
        # EOF on the pipes: every process of the run, workers included, has ended
        _, stderr = proc.communicate(timeout=PROMPT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"the run was still there {PROMPT} s after the signal: {stderr.decode()}")
    took = time.monotonic() - sent
    text = stderr.decode()
    if not signalled or proc.returncode == 0:
        pytest.skip("the run ended before it could be signalled")
    assert proc.returncode == code, text
    assert said in text
    assert "Traceback" not in text, text
    assert took < PROMPT
    assert not Path(out).exists()  # nothing that looks complete

    again = subprocess.run([*_convert_args(source, out), "--resume"], capture_output=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    assert _digest(out) == _digest(str(source))
    assert not stage.exists()


@pytest.mark.parametrize("delay,signum", [
    (0.05, signal.SIGINT),  # the forkserver importing
    (0.25, signal.SIGINT),  # the workers parsing, their results on the way
    (0.25, signal.SIGTERM),
], ids=["int-starting", "int-parsing", "term-parsing"])
def test_a_signalled_single_process_run_with_parsing_workers_exits_promptly(
        source: Path, tmp_path: Path, delay: float, signum: int) -> None:
    """The same of a run in one process whose JSONL reader parses on worker processes (an
    ordered pool, in the reader's own thread), with no output left behind."""
    code, said = (130, "interrupted") if signum == signal.SIGINT else (143, "terminated")
    out = tmp_path / "o.parquet"
    # --limit keeps a run in one process
    proc = subprocess.Popen([sys.executable, "-m", "vecferry", "convert", str(source), str(out),
                             "--workers", "2", "--limit", str(N), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        # the writer's temporary file: the run has read its first records
        while proc.poll() is None and time.monotonic() < deadline \
                and not list(tmp_path.glob(".o.parquet.vftmp-*")):
            time.sleep(0.005)
        time.sleep(delay)
        os.killpg(proc.pid, signum)
        _, stderr = proc.communicate(timeout=PROMPT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"the run was still there {PROMPT} s after the signal: {stderr.decode()}")
    except ProcessLookupError:
        proc.communicate()
        pytest.skip("the run ended before it could be signalled")
    text = stderr.decode()
    if proc.returncode == 0:
        pytest.skip("the run ended before it could be signalled")
    assert proc.returncode == code, text
    assert said in text
    assert "Traceback" not in text, text
    assert not out.exists()
    assert not list(tmp_path.glob(".o.parquet.vftmp-*"))


def test_workers_ignore_sigint_and_stop_pool_kills_them_at_once() -> None:
    pool = worker_pool(2, [])
    try:
        busy = pool.submit(time.sleep, 60)
        pids = {pool.submit(os.getpid).result(timeout=60) for _ in range(4)}
        processes = list(pool._processes.values())
        for pid in pids:
            os.kill(pid, signal.SIGINT)
        time.sleep(0.2)
        assert pool.submit(os.getpid).result(timeout=10) in pids  # still at work
    finally:
        started = time.monotonic()
        stop_pool(pool)
    assert time.monotonic() - started < 5  # the sleeping task is not waited for
    assert processes and all(p.exitcode is not None for p in processes)
    assert busy.done()


def test_an_interrupt_while_held_is_raised_after_the_block() -> None:
    reached = False
    with pytest.raises(KeyboardInterrupt), _interrupts_held():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the signal has come, and is held
        reached = True
    assert reached
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_workers_of_a_killed_run_end_though_its_caller_has_not_reaped_it(
        source: Path, tmp_path: Path) -> None:
    """SIGKILL (the out-of-memory killer, ``kill -9``) to the run alone: its workers must end
    by themselves, and the caller reading the run's pipes must see them close. Until the caller
    waits for it, the run is a zombie, which still answers ``kill(pid, 0)``."""
    out = f"{tmp_path}/out/"
    stage = tmp_path / ".out.vfparts"
    proc = subprocess.Popen(_convert_args(source, out), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        done = stage / "done"
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if done.is_dir() and list(done.glob("part-*.json")):
                break  # the workers are running
            time.sleep(0.005)
        if proc.poll() is not None:
            pytest.skip("the run ended before it could be killed")
        os.kill(proc.pid, signal.SIGKILL)  # the run only, not its process group
        proc.communicate(timeout=PROMPT)  # reads to EOF before it waits: the run stays a zombie
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"the killed run's workers still held its pipes {PROMPT} s later")
    assert proc.returncode == -signal.SIGKILL
    again = subprocess.run([*_convert_args(source, out), "--resume"], capture_output=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    assert _digest(out) == _digest(str(source))
