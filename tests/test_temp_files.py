"""Temporaries of killed runs, and what --overwrite may delete in a bucket.

A file output is written as ``.<name>.vftmp-<token>`` beside the target, locked through
``<temp>.lock`` while its writer lives; opening the target again removes the temporaries
whose lock is free (their writer died), never one still being written. The writers here
are real processes: one is killed with SIGKILL mid-write, another stays alive.

In a bucket, --overwrite of a prefix follows the local rules: only what vecferry wrote is
replaced, against moto's S3 server on loopback.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import vecferry
from conftest import bucket_keys as _keys
from failing import fails
from vecferry import storage
from vecferry.converters import base
from vecferry.converters.base import AtomicPath, foreign_keys, sweep_stale_temps
from vecferry.errors import UsageError
from vecferry.verification import verify

# A writer in its own process: writes one batch, says so, then waits for a line on stdin
# ("commit" finishes the output, anything else aborts it); a SIGKILL ends it mid-write.
WRITER = """
import sys
import vecferry
src, dst, fmt = sys.argv[1:4]
reader = vecferry.open_reader(src)
writer = vecferry.open_writer(dst, reader.schema, format=fmt)
batches = reader.batches(4)
writer.write_batch(next(batches))
print("writing", flush=True)
if sys.stdin.readline().strip() == "commit":
    for batch in batches:
        writer.write_batch(batch)
    writer.close()
else:
    writer.abort()
"""


def _points(path: Path, n: int = 10) -> str:
    path.write_text("".join(json.dumps({"id": i, "vector": [0.5, float(i)],
                                        "payload": {"i": i}}) + "\n" for i in range(n)))
    return str(path)


def _start_writer(src: str, dst: str, fmt: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, src, dst, fmt], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    assert line == "writing\n", proc.communicate()[1]
    return proc


def _temps(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".vftmp-" in p.name)


def _count(location: str) -> int:
    reader = vecferry.open_reader(location)
    try:
        return sum(b.num_rows for b in reader.batches(100))
    finally:
        reader.close()


# ------------------------------------------------------------------------- killed runs


@pytest.mark.parametrize(("name", "fmt"), [("out.jsonl", "jsonl"), ("out/", "parquet")])
def test_a_killed_runs_temporary_is_removed_by_the_next_run(tmp_path, name, fmt):
    src = _points(tmp_path / "in.jsonl")
    dst = f"{tmp_path}/{name}"
    proc = _start_writer(src, dst, fmt)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    stem = name.rstrip("/")
    left = _temps(tmp_path)
    temp = next(n for n in left if n.startswith(f".{stem}.vftmp-") and not n.endswith(".lock"))
    assert f"{temp}.lock" in left
    assert (tmp_path / temp).is_dir() == name.endswith("/")

    report = vecferry.convert(src, dst, to_format=fmt)

    assert report["written"] == 10
    assert _count(dst) == 10
    assert _temps(tmp_path) == []


def test_the_sweep_names_what_it_removed(tmp_path):
    src = _points(tmp_path / "in.jsonl")
    proc = _start_writer(src, str(tmp_path / "out.jsonl"), "jsonl")
    proc.kill()
    proc.wait()
    temp = next(n for n in _temps(tmp_path) if n.startswith(".out.jsonl.vftmp-")
                and not n.endswith(".lock"))
    out = AtomicPath(tmp_path / "out.jsonl")
    assert out.swept == [tmp_path / temp]
    out.abort()
    # (the manifest sidecar's lock is another target's: swept when that one is opened)
    assert [n for n in _temps(tmp_path) if n.startswith(".out.jsonl.vftmp-")] == []


# --------------------------------------------------------------------------- live runs


@pytest.mark.parametrize(("name", "fmt", "options"), [
    ("out.jsonl", "jsonl", {}),
    ("out/", "parquet", {}),
    ("out/", "parquet", {"workers": 2, "partition_size": "16kB"}),
])
def test_a_live_writers_temporary_survives_a_concurrent_run(tmp_path, name, fmt, options):
    mine = _points(tmp_path / "mine.jsonl", 3000)
    theirs = _points(tmp_path / "theirs.jsonl", 10)
    dst = f"{tmp_path}/{name}"
    proc = _start_writer(theirs, dst, fmt)
    held = _temps(tmp_path)
    assert any(n.endswith(".lock") for n in held)

    report = vecferry.convert(mine, dst, to_format=fmt, **options)

    assert report["written"] == 3000
    assert _temps(tmp_path) == held  # the live writer's temporary and lock are untouched
    _, err = proc.communicate("commit\n")
    # the other run finds our finished output in place: it does not replace it
    assert proc.returncode == 1, err
    assert "output appeared while this run was writing it" in err
    assert _count(dst) == 3000
    # that process ended without aborting: its temporary is stale now, and swept
    sweep_stale_temps(dst.rstrip("/"))
    sweep_stale_temps(dst + ".manifest.json")  # a JSONL file's sidecar, as its next run does
    assert _temps(tmp_path) == []


def test_a_live_writer_of_this_process_is_not_swept(tmp_path):
    first = AtomicPath(tmp_path / "out.jsonl")
    first.temp.write_text("partial")
    second = AtomicPath(tmp_path / "out.jsonl")
    assert second.swept == []
    assert first.temp.read_text() == "partial"
    second.abort()
    first.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


# ------------------------------------------------------------------ what is left alone


def test_only_locked_out_temporaries_of_the_same_target_are_swept(tmp_path):
    def stale(name: str, *, lock: bool = True, directory: bool = False) -> Path:
        temp = tmp_path / name
        if directory:
            (temp / "part-00000.parquet").parent.mkdir()
            (temp / "part-00000.parquet").write_text("x")
        else:
            temp.write_text("x")
        if lock:
            Path(f"{temp}.lock").touch()  # a lock file no process holds: its writer died
        return temp

    dead = stale(".out.jsonl.vftmp-0123abcd")
    dead_dir = stale(".out.jsonl.vftmp-4567cdef", directory=True)
    Path(tmp_path / ".out.jsonl.vftmp-89abcdef.lock").touch()  # died after its temp went
    legacy = stale(".out.jsonl.vftmp-deadbeef", lock=False)  # an older vecferry's: unknown
    other = stale(".out.jsonl.gz.vftmp-0123abcd")  # another target
    odd = stale(".out.jsonl.vftmp-notatoken")

    assert sweep_stale_temps(tmp_path / "out.jsonl") == [dead, dead_dir]

    assert _temps(tmp_path) == sorted([legacy.name, other.name, f"{other.name}.lock",
                                       odd.name, f"{odd.name}.lock"])


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_a_lock_that_is_not_a_regular_file_is_left_alone(tmp_path, kind):
    temp = tmp_path / ".out.jsonl.vftmp-0123abcd"
    temp.write_text("x")
    lock = Path(f"{temp}.lock")
    if kind == "fifo":
        os.mkfifo(lock)  # opening it to read must not wait for a writer
    else:
        (tmp_path / "elsewhere").write_text("keep")
        lock.symlink_to(tmp_path / "elsewhere")
    assert sweep_stale_temps(tmp_path / "out.jsonl") == []
    assert temp.read_text() == "x"
    assert os.path.lexists(lock)
    if kind == "symlink":
        assert (tmp_path / "elsewhere").read_text() == "keep"


def test_without_file_locks_a_temporary_has_no_lock_and_is_never_swept(tmp_path,
                                                                        monkeypatch):
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    with monkeypatch.context() as m:
        m.setattr(base.fcntl, "flock", no_locks)
        out = AtomicPath(tmp_path / "out.jsonl")
    out.temp.write_text("partial")
    assert _temps(tmp_path) == [out.temp.name]
    # with working locks again, a lock-less temporary's writer may still be alive
    assert sweep_stale_temps(tmp_path / "out.jsonl") == []
    out.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_a_lock_caught_by_a_sweeper_is_given_up_for_a_new_name(tmp_path, monkeypatch):
    real = base._try_lock
    calls: list[int] = []

    def caught_first(fd: int) -> bool | None:
        calls.append(fd)
        return False if len(calls) == 1 else real(fd)

    monkeypatch.setattr(base, "_try_lock", caught_first)
    out = AtomicPath(tmp_path / "out.jsonl")
    assert len(calls) == 2
    assert _temps(tmp_path) == [f"{out.temp.name}.lock"]  # the first name left nothing
    out.abort()
    assert _temps(tmp_path) == []


def test_when_no_lock_ever_holds_the_temporary_goes_without(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "_try_lock", lambda fd: False)
    out = AtomicPath(tmp_path / "out.jsonl")
    assert _temps(tmp_path) == []
    out.temp.write_text("partial")
    out.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_a_dropped_output_releases_its_lock(tmp_path):
    out = AtomicPath(tmp_path / "out.jsonl")
    temp = out.temp
    temp.write_text("partial")
    del out  # neither committed nor aborted: its temporary is left, now unlocked
    assert _temps(tmp_path) == sorted([temp.name, f"{temp.name}.lock"])
    again = AtomicPath(tmp_path / "out.jsonl")
    assert again.swept == [temp]
    again.abort()
    assert _temps(tmp_path) == []


# -------------------------------------------------------------------- remote overwrite


DIR_HINT = ("(--overwrite replaces a directory vecferry wrote; choose a new or empty directory, "
            "or move those files out first)")


def test_foreign_keys_follow_the_local_rules():
    keys = ["", "manifest.json", "part-00000.parquet", "vectors.npy", ".x.vftmp-0a1b",
            "idx/", "idx/1.parquet", "empty/", "notes.txt", "deep/a/b.parquet", "sub/x.txt"]
    assert foreign_keys(keys) == ["deep/", "notes.txt", "sub/"]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "npy"])
def test_overwrite_keeps_a_prefix_holding_other_objects(tmp_path, opts, s3, bucket, fmt):
    for key in ("out/notes.txt", "out/sub/main.py", "outside.txt"):
        s3.pipe(f"{bucket}/{key}", b"mine")
    before = _keys(s3, bucket)
    src = _points(tmp_path / "in.jsonl")
    text = fails(UsageError, lambda: vecferry.convert(src, f"s3://{bucket}/out/", to_format=fmt,
                                                      overwrite=True, storage_options=opts))
    assert text == (f"s3://{bucket}/out: the output directory holds files vecferry did not "
                    f"write: notes.txt, sub/ {DIR_HINT}")
    assert _keys(s3, bucket) == before


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "npy"])
def test_overwrite_replaces_a_prefix_vecferry_wrote(tmp_path, opts, s3, bucket, fmt):
    s3.pipe(f"{bucket}/outside.txt", b"mine")  # shares the name's start, not the prefix
    remote = f"s3://{bucket}/out/"
    vecferry.convert(_points(tmp_path / "a.jsonl"), remote, to_format=fmt,
                     storage_options=opts)
    written = _keys(s3, bucket)
    report = vecferry.convert(_points(tmp_path / "b.jsonl", 7), remote, to_format=fmt,
                              overwrite=True, storage_options=opts)
    assert report["written"] == 7
    assert _keys(s3, bucket) == written
    assert "outside.txt" in written
    # ... but not once someone has put an object of their own there
    s3.pipe(f"{bucket}/out/notes.txt", b"mine")
    text = fails(UsageError, lambda: vecferry.convert(
        str(tmp_path / "a.jsonl"), remote, to_format=fmt, overwrite=True,
        storage_options=opts))
    assert text == (f"s3://{bucket}/out: the output directory holds files vecferry did not "
                    f"write: notes.txt {DIR_HINT}")
    assert "out/notes.txt" in _keys(s3, bucket)


def test_overwrite_takes_folder_markers_and_an_index_folder(tmp_path, opts, s3, bucket):
    remote = f"s3://{bucket}/out/"
    vecferry.convert(_points(tmp_path / "a.jsonl"), remote, to_format="parquet",
                     storage_options=opts)
    for key in ("out/", "out/idx/", "out/idx/1.parquet"):  # a console's folders, a VDF index
        s3.pipe(f"{bucket}/{key}", b"")
    report = vecferry.convert(_points(tmp_path / "b.jsonl", 7), remote, to_format="parquet",
                              overwrite=True, storage_options=opts)
    assert report["written"] == 7
    assert _keys(s3, bucket) == ["out/_manifest.json", "out/part-00000.parquet"]


def test_a_file_output_does_not_go_over_a_prefix(opts, s3, bucket):
    s3.pipe(f"{bucket}/data/x.txt", b"mine")
    with storage.using(opts):
        text = fails(UsageError, lambda: AtomicPath(f"s3://{bucket}/data", overwrite=True))
    assert text == (f"s3://{bucket}/data: the output is a directory, and this format writes a "
                    "file (name a file, or remove the directory first)")
    assert _keys(s3, bucket) == ["data/x.txt"]


def test_an_object_put_during_the_run_stops_the_commit(tmp_path, opts, s3, bucket):
    remote = f"s3://{bucket}/out/"
    vecferry.convert(_points(tmp_path / "a.jsonl"), remote, to_format="parquet",
                     storage_options=opts)
    with storage.using(opts):
        out = AtomicPath(remote.rstrip("/"), overwrite=True, directory=True)
        (out.temp / "part-00000.parquet").write_bytes(b"new")
        s3.pipe(f"{bucket}/out/late.txt", b"mine")
        before = _keys(s3, bucket)
        text = fails(UsageError, out.commit)
    assert text == (f"s3://{bucket}/out: the output directory holds files vecferry did not "
                    f"write: late.txt {DIR_HINT}")
    # nothing deleted, and the aborted commit removed its temporary prefix
    assert _keys(s3, bucket) == [k for k in before if ".vftmp-" not in k]
    assert "out/late.txt" in before


# ------------------------------------------------------------- scratch directories

HOLDER = """
import sys
from vecferry.converters.base import ScratchDir
scratch = ScratchDir(sys.argv[1])
(scratch.path / "spill.arrow").write_bytes(b"x" * 1000)
print(scratch.path, flush=True)
sys.stdin.readline()
"""


def _hold_scratch(kind: str, tmpdir: Path) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, kind], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, "TMPDIR": str(tmpdir)})
    path = Path(proc.stdout.readline().strip())  # type: ignore[union-attr]
    assert path.parent == tmpdir and (path / "spill.arrow").exists()
    return proc, path


def test_a_killed_runs_scratch_directory_is_removed_by_the_next_run(tmp_path, monkeypatch):
    """Spills (verify, duplicate ids, staged uploads) live in the system temp directory: one a
    SIGKILLed run left is removed when the next run makes one of its kind; a live one stays."""
    import tempfile

    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    killed, stale = _hold_scratch("verify", tmpdir)
    killed.kill()
    killed.wait()
    live, held = _hold_scratch("verify", tmpdir)
    other, _ = _hold_scratch("ids", tmpdir)
    other.kill()
    other.wait()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    src = _points(tmp_path / "in.jsonl")
    vecferry.convert(src, str(tmp_path / "out.parquet"), workers=1)
    assert verify(src, str(tmp_path / "out.parquet"), queries=0)["ok"] is True

    assert not stale.exists() and not Path(f"{stale}.lock").exists()
    assert held.exists() and Path(f"{held}.lock").exists()  # its run is still going
    # the convert made (and removed) its own id spill, sweeping the killed one of that kind
    assert sorted(p.name for p in tmpdir.iterdir()) == sorted([held.name, f"{held.name}.lock"])
    live.communicate("\n")
    # a process that ends without removing its scratch directory removes it at exit
    assert list(tmpdir.iterdir()) == []
    scratch = base.ScratchDir("verify", tmpdir)
    assert scratch.path.stat().st_mode & 0o777 == 0o700
    scratch.remove()
    assert list(tmpdir.iterdir()) == []
