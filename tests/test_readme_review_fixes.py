"""Fixes after a walk through the README: a Ctrl-C or SIGTERM once a conversion's output is in
place says the output is whole (during the rest of the run or its verification) or is ignored
(while the report is printed and the process exits), ``verify`` takes the source's options as
``reader_options`` (the README's example), a bad record that stops a run offers ``--on-error
skip`` whatever hint it has, a NaN the JSONL writer refuses is named at its source file and row,
``convert --on-error skip --verify`` runs search parity, and the report counts the values
narrowing to float32 changed (``narrowed_values``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

import vecferry
import vecferry.ledger
import vecferry.verification
from roundtrip import leftovers
from vecferry.cli import main
from vecferry.errors import RecordError, UsageError

N, DIM = 50, 8
# the runs here warn of what they read (float64 narrowed, a bad sample): the reports say it
pytestmark = pytest.mark.filterwarnings("ignore::vecferry.errors.VecferryWarning")


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(autouse=True)
def _python_takes_sigint() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt here, as in a command-line run (a test runner may have
    set it otherwise), and is given back as it was."""
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _npy(tmp_path: Path, n: int = N, dtype: Any = np.float32) -> Path:
    src = tmp_path / "v.npy"
    np.save(src, np.random.default_rng(5).standard_normal((n, DIM)).astype(dtype))
    return src


def _signalled(fn: Any) -> Any:
    """``fn``, called after a SIGINT is sent to this process: the signal's KeyboardInterrupt
    comes from within it, as a Ctrl-C pressed then would."""
    def call(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGINT)
        return fn(*args, **kwargs)
    return call


# -- B1: an interrupt once the output is in place ---------------------------------------------


def test_an_interrupt_after_the_writer_closed_says_the_output_is_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped while counting repeated ids, after the output was put in place: the message
    said "was not written" beside a complete output."""
    src, out = _npy(tmp_path), tmp_path / "o.jsonl"
    monkeypatch.setattr(vecferry.ledger.IdLedger, "finish",
                        _signalled(vecferry.ledger.IdLedger.finish))
    notice = (f"{out} holds this run's whole output ({N} point(s) written): the run was "
              "stopped after the output was put in place, before its report was made")
    with pytest.raises(KeyboardInterrupt) as info:
        vecferry.convert(src, out, workers=1)
    assert info.value.args == (notice,)
    assert vecferry.verify(src, out)["ok"]

    out.unlink()
    Path(f"{out}.manifest.json").unlink()
    result = run("convert", str(src), str(out), "--workers", "1", "--json")
    assert result.exit_code == 130
    assert result.stderr == f"interrupted: {notice}\n"
    doc = json.loads(result.stdout)
    assert (doc["message"], doc["complete"]) == (f"interrupted: {notice}", True)
    assert vecferry.verify(src, out)["ok"] and leftovers(tmp_path) == []


def test_an_interrupted_verification_says_the_output_is_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, out = _npy(tmp_path), tmp_path / "o.parquet"
    monkeypatch.setattr(vecferry.verification, "verify",
                        _signalled(vecferry.verification.verify))
    result = run("convert", str(src), str(out), "--verify", "--workers", "1", "-q")
    assert result.exit_code == 130
    assert result.stderr == (
        f"interrupted: {out} holds this run's whole output ({N} point(s) written): the "
        "verification did not finish (run `vecferry verify` to compare)\n")
    monkeypatch.undo()
    assert vecferry.verify(src, out)["ok"]


def test_an_interrupt_while_the_report_is_printed_is_ignored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run was done: its report is printed whole and its exit code stands (it exited 130
    saying the output was not written); the handlers are the caller's again after."""
    import vecferry.cli

    src, out = _npy(tmp_path), tmp_path / "o.jsonl"
    monkeypatch.setattr(vecferry.cli, "_emit_json", _signalled(vecferry.cli._emit_json))
    result = run("convert", str(src), str(out), "--workers", "1", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["ok"], doc["written"]) == (True, N)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert vecferry.verify(src, out)["ok"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_as_the_process_exits_keeps_its_exit_code(tmp_path: Path,
                                                           signum: int) -> None:
    """A signal while Python tears the process down (here from an object freed then), once
    it has given the signals their default actions back, ended the run silently with 130."""
    src, out = _npy(tmp_path), tmp_path / "o.jsonl"
    script = (
        "import os, sys, time\n"
        "class Late:\n"
        "    def __del__(self, kill=os.kill, pid=os.getpid(), sleep=time.sleep):\n"
        f"        kill(pid, {int(signum)})\n"
        "        sleep(0.3)\n"
        "late = Late()\n"
        "if __name__ == '__main__':\n"
        "    from vecferry.cli import main\n"
        f"    sys.argv = ['vecferry', 'convert', {str(src)!r}, {str(out)!r}, '-q']\n"
        "    main()\n")
    (tmp_path / "cmd.py").write_text(script)
    done = subprocess.run([sys.executable, str(tmp_path / "cmd.py")], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert vecferry.verify(src, out)["ok"]


# -- C1: verify takes the source's options as convert names them -------------------------------


def test_verify_takes_reader_options_as_convert_does(tmp_path: Path) -> None:
    """The README's example: verify read the source without its ids (TypeError given
    ``reader_options``)."""
    src, out = _npy(tmp_path), tmp_path / "points.parquet"
    np.save(tmp_path / "ids.npy", np.arange(1000, 1000 + N, dtype=np.uint64))
    (tmp_path / "meta.jsonl").write_text("".join(json.dumps({"i": i}) + "\n" for i in range(N)))
    options = {"ids": tmp_path / "ids.npy", "payloads": tmp_path / "meta.jsonl"}
    vecferry.convert(src, out, reader_options=options)
    report = vecferry.verify(src, out, reader_options=options)
    assert report["ok"] and report["verdict"] == "identical"
    assert vecferry.verify(src, out, src_options=options)["ok"]  # its older name
    with pytest.raises(UsageError) as info:
        vecferry.verify(src, out, reader_options=options, src_options=options)
    assert str(info.value) == ("reader_options and src_options are two names of the source's "
                               "options: give one of them (pass reader_options=, the name "
                               "convert() uses)")


# -- C2: a bad record that stops a run offers --on-error skip -----------------------------------

SKIP = ("pass --on-error skip to go on past such records: convert and copy set them aside in a "
        "rejects file")


@pytest.mark.parametrize(("name", "where", "message", "hint"), [
    ("missing_vector", "line 5, id 4", "point has no vector",
     "every point needs the unnamed vector"),
    ("overflow", "line 2, id 1", "vector holds 1e+39, outside float32's range of about ±3.4e38",
     "fix the value: vectors hold finite numbers in the range of float32"),
    ("not_json", "line 3",
     "line is not valid JSON: unexpected end of data: line 1 column 30 (char 29)",
     "fix or remove the line"),
    ("truncated", "line 7", "the last line is cut short (file truncated?)",
     "the file may still be downloading or was cut; re-create it"),
    ("wrong_dim", "line 4, id 3", "vector has 7 dimensions, expected 8", None),
])
def test_a_bad_record_that_stops_a_run_offers_skip(samples: Path, tmp_path: Path, name: str,
                                                   where: str, message: str,
                                                   hint: str | None) -> None:
    """The library's error says what is wrong and how to fix it; the command line, whose flag
    it is, adds --on-error skip to every such hint (it was missing from those with a hint)."""
    src = samples / "bad" / f"{name}.jsonl"
    with pytest.raises(RecordError) as info:
        vecferry.convert(src, tmp_path / "o.parquet")
    assert str(info.value) == f"{src}, {where}: {message}" + (f" ({hint})" if hint else "")
    result = run("convert", str(src), str(tmp_path / "o.parquet"))
    assert result.exit_code == 1
    shown = f"{hint}; or {SKIP}" if hint else f"fix the record, or {SKIP}"
    assert result.stderr.splitlines()[-1] == f"error: {src}, {where}: {message} ({shown})"
    # and the record is one --on-error skip sets aside
    report = vecferry.convert(src, tmp_path / "o.parquet", on_error="skip", overwrite=True)
    assert report["rejected"] == 1


def test_a_float16_value_out_of_range_is_named(tmp_path: Path) -> None:
    """A float16 stream (its manifest says so) refuses a value float16 cannot hold, by it."""
    np.save(tmp_path / "h.npy", np.array([[1.0, 2.0]], dtype=np.float16))
    src = tmp_path / "h.jsonl"
    vecferry.convert(tmp_path / "h.npy", src)
    src.write_text(json.dumps({"id": 0, "vector": [1.0, 70000.0]}) + "\n")
    with pytest.raises(RecordError) as info:
        vecferry.convert(src, tmp_path / "o.parquet")
    assert info.value.message == "vector holds 70000.0, outside float16's range of ±65504"


# -- C3: a NaN the JSONL writer refuses is named where the source holds it ----------------------


def test_a_nan_refused_by_the_jsonl_writer_is_named_at_its_source_row(tmp_path: Path) -> None:
    """It named the output file and no row (``o.jsonl, id 60``)."""
    mat = np.random.default_rng(7).standard_normal((7, 4)).astype(np.float32)
    mat[5, 2] = np.nan
    src, ids, out = tmp_path / "v.npy", tmp_path / "ids.npy", tmp_path / "o.jsonl"
    np.save(src, mat)
    np.save(ids, np.array([10, 20, 30, 40, 50, 60, 70], dtype=np.int64))
    with pytest.raises(RecordError) as info:
        vecferry.convert(src, out, reader_options={"ids": ids}, batch_size=2)
    assert str(info.value) == (
        f"{src}, row 5, id 60: vector holds NaN or infinity, which JSON cannot hold (fix the "
        "source vector, or pass --on-error skip to write the rest and keep this point in the "
        "rejects file)")
    result = run("convert", str(src), str(out), "--ids", str(ids))
    assert result.stderr == f"error: {info.value}\n"
    assert not out.exists() and leftovers(tmp_path) == []

    # skipping, the rows the reader rejected before it (a negative id) are counted past
    np.save(ids, np.array([10, -20, 30, 40, 50, 60, 70], dtype=np.int64))
    rejects = tmp_path / "r.jsonl"
    report = vecferry.convert(src, out, reader_options={"ids": ids}, on_error="skip",
                              rejects=rejects, batch_size=2)
    assert (report["read"], report["written"], report["rejected"]) == (7, 5, 2)
    notes = [json.loads(line)["_vecferry_reject"] for line in rejects.read_text().splitlines()]
    # the output's refusal keeps naming the output (verify --rejects leaves such points out
    # by it), and says where the source holds the point
    assert notes == [
        {"reason": "id -20 is negative",
         "source": str(ids), "row": 1},
        {"reason": "vector holds NaN or infinity, which JSON cannot hold", "source": str(out),
         "point_id": 60, "source_location": {"source": str(src), "row": 5}}]
    verified = vecferry.verify(src, out, reader_options={"ids": ids}, on_error="skip",
                               rejects=rejects)
    assert verified["ok"] and verified["search"]["recall"] == 1.0


def test_a_nan_in_a_directory_of_vectors_names_its_file(tmp_path: Path) -> None:
    folder = tmp_path / "vectors"
    folder.mkdir()
    for i in range(1, 6):
        np.save(folder / f"{i}.npy", np.full(4, np.nan if i == 4 else float(i), np.float32))
    with pytest.raises(RecordError) as info:
        vecferry.convert(folder, tmp_path / "o.jsonl", batch_size=2)
    assert info.value.location.source == str(folder / "4.npy")
    assert (info.value.location.row, info.value.location.point_id) == (3, 4)


# -- C7: convert --on-error skip --verify runs search parity -----------------------------------


def test_convert_verify_with_rejects_runs_search_parity(tmp_path: Path) -> None:
    """It passed no queries when records were rejected, while verify ran them."""
    src = tmp_path / "p.jsonl"
    rng = np.random.default_rng(3)
    with open(src, "w") as f:
        for i in range(40):
            size = DIM - 1 if i == 7 else DIM  # a bad record: a vector of another size
            f.write(json.dumps({"id": i, "vector": rng.standard_normal(size).tolist()}) + "\n")
    out = tmp_path / "o.parquet"
    result = run("convert", str(src), str(out), "--on-error", "skip", "--verify", "--json")
    assert result.exit_code == 3, result.output
    verified = json.loads(result.stdout)["verify"]
    assert verified["ok"] and verified["source_rejected"] == 1
    assert (verified["search"]["queries"], verified["search"]["recall"]) == (10, 1.0)


# -- C8: the report counts the values narrowing changed ----------------------------------------


def test_the_report_counts_the_narrowed_values(tmp_path: Path) -> None:
    src = _npy(tmp_path, dtype=np.float64)
    mat = np.load(src)
    changed = int(np.count_nonzero(mat.astype(np.float32).astype(np.float64) != mat))
    assert changed
    report = vecferry.convert(src, tmp_path / "o.parquet")
    assert report["narrowed_values"] == changed
    assert f"{changed} float64 value(s) changed when narrowed to float32" in report["warnings"]
    result = run("convert", str(src), str(tmp_path / "o2.parquet"), "--json")
    assert json.loads(result.stdout)["narrowed_values"] == changed
    # partitions each count their own: the run reports the sum
    report = vecferry.convert(src, f"{tmp_path}/parts/", to_format="parquet", workers=2,
                              partition_size=600)
    assert report.get("partitions", 0) > 1 and report["narrowed_values"] == changed

    exact = tmp_path / "exact.npy"
    np.save(exact, np.full((4, DIM), 0.5))
    assert vecferry.convert(exact, tmp_path / "e.parquet")["narrowed_values"] == 0
    assert "narrowed_values" not in vecferry.convert(_npy(tmp_path), tmp_path / "f.parquet")
    # a run cut short by --limit ends before its reader counts: no count rather than 0
    cut = vecferry.convert(src, tmp_path / "l.parquet", limit=3, batch_size=2)
    assert "narrowed_values" not in cut


def test_a_parquet_float64_column_counts_its_narrowed_values(tmp_path: Path) -> None:
    values = [[0.1 * i, 0.5, 1.0] for i in range(6)]
    src = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"pk": list(range(6)), "emb": values}), src)
    changed = sum(float(np.float32(v)) != v for row in values for v in row)
    report = vecferry.convert(src, tmp_path / "o.jsonl",
                              reader_options={"id_column": "pk", "vector_column": ["emb"]})
    assert report["narrowed_values"] == changed == 4
