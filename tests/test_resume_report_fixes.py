"""Interrupt and resume reports after review: an interrupted command says what it left for the
command and target at hand (how many points a collection acknowledged, by its state file; a
file output not written, or the parts kept; a diff file cut short), in the ``--json`` document
too; a resume may change ``--mode`` (never applied while resuming); and a finished partitioned
load run again with ``--resume`` reports the whole load's rejects, as a single-process one
does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

import vecferry
import vecferry.cli
import vecferry.pipeline
from vecferry.cli import main

pytest.importorskip("qdrant_client")

N, DIM = 1200, 8


def _src(tmp_path: Path, bad: frozenset[int] = frozenset()) -> Path:
    rng = np.random.default_rng(3)
    src = tmp_path / "src.jsonl"
    with open(src, "w") as f:
        for i in range(N):
            size = DIM + 1 if i in bad else DIM  # a vector of another size: a bad record
            f.write(json.dumps({"id": i + 1, "vector": rng.standard_normal(size).tolist(),
                                "payload": {"i": i}}) + "\n")
    return src


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


class _Bar:
    """The command's progress bar, stopped by a Ctrl-C at one of its calls: ``update`` (once
    a batch is written), ``total`` (before any is), ``refresh`` (every batch or part written,
    the output not yet made), ``close`` (once the run has returned)."""

    def __init__(self, at: str):
        self.at = at

    @property
    def total(self) -> int | None:
        return None

    @total.setter
    def total(self, value: int | None) -> None:
        if self.at == "total":
            raise KeyboardInterrupt

    def update(self, n: int) -> None:
        if n and self.at == "update":
            raise KeyboardInterrupt

    def refresh(self) -> None:
        if self.at == "refresh":
            raise KeyboardInterrupt

    def close(self) -> None:
        if self.at == "close":
            self.at = ""  # once: the bar of a copy's verification closes too
            raise KeyboardInterrupt


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a collection's default state file and staging directory are made in the working directory
    monkeypatch.chdir(tmp_path)


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, at: str) -> None:
    monkeypatch.setattr(vecferry.cli, "_progress", lambda quiet, desc: _Bar(at))


def _interrupted(result: Result, message: str) -> dict[str, Any]:
    assert result.exit_code == 130, result.output
    assert result.stderr == f"interrupted: {message}\n"
    doc = json.loads(result.stdout)
    assert {k: doc[k] for k in ("ok", "error", "signal", "message")} == {
        "ok": False, "error": "Interrupted", "signal": "SIGINT",
        "message": f"interrupted: {message}"}
    return doc


def test_an_interrupted_load_into_a_collection_says_how_many_points_it_acknowledged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _src(tmp_path)
    dst = f"qdrant-local://{tmp_path / 'q'}/c"
    state = tmp_path / "state.json"
    _interrupt_at(monkeypatch, "update")
    result = run("convert", str(src), dst, "--resume", "--state", str(state), "--workers", "1",
                 "--batch-size", "100", "--json")
    saved = json.loads(state.read_text())
    assert 0 < saved["written"] < N and not saved["done"]
    doc = _interrupted(result, (
        f"{dst} keeps the {saved['written']} point(s) acknowledged so far ({state} records "
        f"source position {saved['position']}); run the same command with --resume to send "
        "only the rest"))
    assert doc["acknowledged"] == {"state_file": str(state), "position": saved["position"],
                                   "written": saved["written"], "done": False}


def test_an_interrupt_before_a_collection_acknowledged_anything_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _src(tmp_path)
    dst = f"qdrant-local://{tmp_path / 'q'}/c"
    _interrupt_at(monkeypatch, "total")
    result = run("convert", str(src), dst, "--resume", "--workers", "1", "--json")
    state = Path(vecferry.pipeline.default_state_path(dst))
    assert not state.exists()
    doc = _interrupted(result, (f"{dst} acknowledged no batch yet (no state was saved in "
                                f"{state}); run the same command again"))
    assert doc["acknowledged"]["written"] == 0


def test_an_interrupted_load_without_resume_says_no_position_was_recorded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _src(tmp_path)
    dst = f"qdrant-local://{tmp_path / 'q'}/c"
    _interrupt_at(monkeypatch, "update")
    result = run("convert", str(src), dst, "--workers", "1", "--batch-size", "100", "--json")
    doc = _interrupted(result, (
        f"{dst} keeps the points it acknowledged, but a run without --resume records no "
        "position: the same command run again sends every point again (upserted by id, so "
        "none is doubled); pass --resume to continue where a run stops"))
    assert "acknowledged" not in doc


@pytest.mark.parametrize("command", ["convert", "copy"])
def test_an_interrupt_after_the_load_finished_says_it_is_whole(
        command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = str(_src(tmp_path))
    if command == "copy":  # copy moves a collection
        src = f"qdrant-local://{tmp_path / 'a'}/c"
        vecferry.convert(tmp_path / "src.jsonl", src)
    dst = f"qdrant-local://{tmp_path / 'q'}/c"
    state = tmp_path / "state.json"
    _interrupt_at(monkeypatch, "close")
    result = run(command, src, dst, "--resume", "--state", str(state), "--workers", "1",
                 "--json")
    after = ("; the verification did not finish (run `vecferry verify` to compare)"
             if command == "copy" else "")
    doc = _interrupted(result, (
        f"{dst} holds the whole load: {state} marks it done ({N} point(s) written), so the "
        f"same command with --resume sends nothing again{after}"))
    assert doc["acknowledged"] == {"state_file": str(state), "position": N, "written": N,
                                   "done": True}


def test_an_interrupted_file_output_says_it_was_not_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _src(tmp_path)
    _interrupt_at(monkeypatch, "refresh")
    out = tmp_path / "o.parquet"
    # one process: there are no parts to speak of
    result = run("convert", str(src), str(out), "--workers", "1", "--batch-size", "100",
                 "--json")
    doc = _interrupted(result, f"{out} was not written (an output appears only when complete)")
    assert "parts" not in doc and not out.exists()
    # in partitions: the finished ones are kept for --resume
    result = run("convert", str(src), f"{tmp_path / 'pd'}/", "--to", "parquet", "--workers",
                 "2", "--partition-size", "16KB", "--json")
    parts = tmp_path / ".pd.vfparts"
    assert parts.is_dir()
    doc = _interrupted(result, (
        f"{tmp_path / 'pd'}/ was not written (an output appears only when complete); its "
        f"finished parts are kept in {parts} for the same command with --resume"))
    assert doc["parts"] == str(parts)


def test_an_interrupted_verify_says_its_diff_file_is_cut_short(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vecferry.verification

    src = _src(tmp_path)
    lines = src.read_text().splitlines()
    lines[5] = json.dumps({"id": 6, "vector": [0.5] * DIM, "payload": {"i": 5}})
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o.parquet"
    vecferry.convert(other, out)  # one vector differs: the comparison goes id by id
    diff = tmp_path / "diff.jsonl"

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    # the per-id comparison, which writes the diff file as it goes, is where it stops
    monkeypatch.setattr(vecferry.verification, "_pieces", interrupted)
    result = run("verify", str(src), str(out), "--diff", str(diff), "--json")
    doc = _interrupted(result, (f"the comparison did not finish; {diff} holds only the "
                                "differences found before it stopped"))
    assert doc["diff_file"] == str(diff)
    # without --diff nothing was written
    result = run("verify", str(src), str(out), "--json")
    _interrupted(result, "nothing was written")


def test_a_resume_may_leave_out_the_mode_of_the_run_it_continues(tmp_path: Path) -> None:
    # --mode says what to do with a collection that exists, which a resume never does: a
    # resume without it is not "another option"
    src = _src(tmp_path)
    dst = f"qdrant-local://{tmp_path / 'q'}/c"
    state = str(tmp_path / "state.json")
    vecferry.convert(src, dst, resume=True, state=state, workers=1, limit=500,
                     writer_options={"mode": "overwrite"})
    report = vecferry.convert(src, dst, resume=True, state=state, workers=1)
    assert (report["resumed_from"], report["written_total"]) == (500, N)


def test_a_finished_partitioned_load_run_again_reports_its_rejects(tmp_path: Path) -> None:
    src = _src(tmp_path, frozenset({10, 900}))
    dst = f"qdrant-local://{tmp_path / 'q'}/c"
    flags = ["--resume", "--workers", "2", "--partition-size", "16KB", "--on-error", "skip",
             "--json"]
    first = run("convert", str(src), dst, *flags)
    assert first.exit_code == 3, first.output
    report = json.loads(first.stdout)
    assert (report["partitions"] > 1, report["rejected"]) == (True, 2)
    again = run("convert", str(src), dst, *flags)
    report = json.loads(again.stdout)
    assert (report["written"], report["written_total"]) == (0, N - 2)
    assert (report["rejected"], report["rejected_total"]) == (0, 2)
    assert report["rejects_file"] == str(vecferry.pipeline.default_rejects_path(dst))
    assert again.exit_code == 3
