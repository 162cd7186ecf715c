"""A run that fails keeps what it warned about before failing, and says how to go on."""

from __future__ import annotations

import pytest

import vecferry
from vecferry.errors import RecordError


def test_an_error_carries_the_warnings_the_run_gave_before_it(samples, tmp_path):
    src = str(samples / "bad" / "wrong_dim.jsonl")
    with pytest.raises(RecordError) as info:
        vecferry.convert(src, str(tmp_path / "o.parquet"))
    assert info.value.warnings == [
        f"{src}: the unnamed vector: the 6 points sampled to infer the vectors hold 5 of size "
        "8, 1 of size 7; size 8, which most hold, is taken, so points of size 7 (first at line "
        "4) are bad records"]
    assert info.value.as_dict()["warnings"] == info.value.warnings
    # the library names no command-line flag: the hint is the CLI's
    assert str(info.value) == f"{src}, line 4, id 3: vector has 7 dimensions, expected 8"


def test_an_error_of_a_run_without_warnings_lists_none(samples, tmp_path):
    src = str(samples / "bad" / "payload_not_object.jsonl")
    with pytest.raises(RecordError) as info:
        vecferry.convert(src, str(tmp_path / "o.parquet"))
    assert getattr(info.value, "warnings", None) is None
    assert "warnings" not in info.value.as_dict()
