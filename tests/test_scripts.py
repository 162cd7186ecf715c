"""vecferry called from a user's script, the way the README shows it.

Worker processes (JSON parsing, partitions) run the calling script again as they start, as
multiprocessing does. A script that calls vecferry at its top level, without the
``if __name__ == "__main__":`` guard, must fail with a message that says so, and the workers
must not run the conversion (or open the reader) again on their own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest

GUARD = 'a script must call vecferry under if __name__ == "__main__":'
N = 20_000  # past parallel.INLINE_ROWS, so the JSONL read starts its worker processes


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("script")
    x = np.random.default_rng(5).standard_normal((N, 8)).astype(np.float32)
    (d / "p.jsonl").write_bytes(b"".join(
        orjson.dumps({"id": i, "vector": x[i].tolist(), "payload": {"i": i}}) + b"\n"
        for i in range(N)))
    np.save(d / "v.npy", x)
    return d


def _run(directory: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = directory / "job.py"
    script.write_text("import vecferry\n" + body)
    return subprocess.run([sys.executable, str(script)], cwd=directory, capture_output=True,
                          text=True, timeout=300)


CALLS = {
    "JSON workers": 'vecferry.convert("p.jsonl", "out.parquet", workers=2, overwrite=True)',
    "reader": '{"written": sum(b.num_rows for b in vecferry.open_reader("p.jsonl", '
              'workers=2).batches(1000))}',
    "partitions": 'vecferry.convert("v.npy", "parts/", to_format="parquet", workers=2, '
                  'partition_size="64kB", overwrite=True)',
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_an_unguarded_script_is_told_to_add_the_main_guard(sources, tmp_path, call):
    for f in ("p.jsonl", "v.npy"):
        (tmp_path / f).symlink_to(sources / f)
    run = _run(tmp_path, "open('runs.txt', 'a').write('x')\n"
                         f"print({CALLS[call]}['written'])\n")
    assert run.returncode == 1
    # the script ran once, then once in each of the two workers: the run stopped at the first
    # worker lost that way instead of starting new ones (which would run it again)
    assert 2 <= len((tmp_path / "runs.txt").read_text()) <= 3
    # each worker refuses to convert while it starts, instead of converting again. Two workers
    # print their tracebacks at once, in pieces that interleave (seen: "UsageError" + the
    # other's line + ": ..."); the message itself is one write, so it is checked alone.
    what = "open_reader" if call == "reader" else "convert"
    assert "UsageError" in run.stderr
    assert (f"vecferry.{what} was called while a vecferry worker process was starting, which "
            f"runs the calling script again ({GUARD}") in run.stderr, run.stderr
    # ... and the script's own call fails saying what happened and naming the fix
    last = run.stderr.strip().splitlines()[-1]
    assert GUARD in last
    assert (f"vecferry.{what} runs at the calling script's top level, so each vecferry worker "
            "process ran it again as it started, and the run stopped") in last
    assert not list(Path(tempfile.gettempdir()).glob("vecferry-script-rerun-*"))
    assert not (tmp_path / "out.parquet").exists() and not (tmp_path / "parts").exists()
    assert not list(tmp_path.glob("*vftmp*")) and not list(tmp_path.glob(".*vftmp*"))


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_guarded_script_runs_its_workers(sources, tmp_path, call):
    for f in ("p.jsonl", "v.npy"):
        (tmp_path / f).symlink_to(sources / f)
    run = _run(tmp_path, f'if __name__ == "__main__":\n    print({CALLS[call]}["written"])\n')
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(N)]


def test_the_main_guard_advice_is_left_out_for_the_command_line(monkeypatch):
    import types

    from vecferry import cli
    from vecferry.parallel import lost_worker_hint

    console_script = types.ModuleType("__main__")
    console_script.main = cli.main  # what pip's `vecferry` script and `python -m vecferry` hold
    monkeypatch.setitem(sys.modules, "__main__", console_script)
    assert lost_worker_hint("check memory limits") == "check memory limits"
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    assert lost_worker_hint("check memory limits") == f"check memory limits; {GUARD}, or with " \
        "workers=1"


# ------------------------------------------------------------- a script read from stdin


def _run_stdin(directory: Path, body: str) -> subprocess.CompletedProcess[str]:
    # `python - <<EOF`: __main__.__file__ is "<stdin>", which no worker process can run again
    return subprocess.run([sys.executable, "-"], input="import vecferry\n" + body,
                          cwd=directory, capture_output=True, text=True, timeout=300)


DEFAULT_CALLS = {
    "JSON workers": 'vecferry.convert("p.jsonl", "out.parquet", overwrite=True)',
    "partitions": 'vecferry.convert("v.npy", "parts/", to_format="parquet", '
                  'partition_size="64kB", overwrite=True)',
}


@pytest.mark.parametrize("call", sorted(DEFAULT_CALLS))
def test_a_script_from_stdin_runs_in_one_process_by_default(sources, tmp_path, call):
    for f in ("p.jsonl", "v.npy"):
        (tmp_path / f).symlink_to(sources / f)
    run = _run_stdin(tmp_path, f"r = {DEFAULT_CALLS[call]}\nprint(r['written'], "
                               "r.get('workers', 1))\n")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(N), "1"]
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_script_from_stdin_asking_for_workers_is_told_why_not(sources, tmp_path, call):
    for f in ("p.jsonl", "v.npy"):
        (tmp_path / f).symlink_to(sources / f)
    run = _run_stdin(tmp_path, f"print({CALLS[call]}['written'])\n")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == (
        "vecferry.errors.UsageError: worker processes cannot start from a script read from "
        "standard input (each one runs the calling script again, and there is no file to run) "
        "(save the script to a file and run that, or pass workers=1)")
    assert "FileNotFoundError" not in run.stderr  # no worker was started to fail
    assert not (tmp_path / "out.parquet").exists() and not (tmp_path / "parts").exists()


# ------------------------------------------------------- a run killed with its workers


def _marked(mark: str) -> list[int]:
    """Processes whose environment carries ``mark``: the run and all it started."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if f"VF_TEST_MARK={mark}".encode() in fh.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_end_when_their_run_is_killed(tmp_path):
    # SIGKILL gives the run no chance to stop its workers: they must notice on their own
    # (before, the forkserver and its workers lived on and kept writing)
    np.save(tmp_path / "v.npy", np.random.default_rng(1).standard_normal((300_000, 64))
            .astype(np.float32))
    (tmp_path / "job.py").write_text(
        "import vecferry\nif __name__ == '__main__':\n"
        "    vecferry.convert('v.npy', 'out/', to_format='jsonl', workers=2, "
        "partition_size='1MB')\n")
    mark = uuid.uuid4().hex
    run = subprocess.Popen([sys.executable, "job.py"], cwd=tmp_path,
                           env={**os.environ, "VF_TEST_MARK": mark},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(_marked(mark)) < 4 and time.monotonic() < deadline:  # run, server, 2 workers
            assert run.poll() is None, "the run ended before its workers could be seen"
            time.sleep(0.05)
        assert len(_marked(mark)) >= 4
    finally:
        run.kill()
        run.wait()
    deadline = time.monotonic() + 10
    while _marked(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _marked(mark) == []
