"""Helpers of the bad-input tests: run an action that must fail, read a location whole."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import vecferry
from vecferry.errors import VecferryError


def fails(cls: type[VecferryError], action: Callable[[], object]) -> str:
    """Run ``action``, which must raise exactly ``cls``; return the error's text."""
    with pytest.raises(cls) as info:
        action()
    assert type(info.value) is cls
    return str(info.value)


def fails_converting(cls: type[VecferryError], src: str, out: Path, **reader_options: Any
                     ) -> str:
    """Convert ``src`` to ``out`` in batches of 2, which must raise exactly ``cls``: the
    error's text; neither ``out`` nor any temporary is left in its directory."""
    from roundtrip import leftovers

    text = fails(cls, lambda: vecferry.convert(src, str(out), batch_size=2,
                                               reader_options=reader_options))
    assert not out.exists() and leftovers(out.parent) == []
    return text


def read_all(location: str, **options: object) -> None:
    """Open ``location`` and read every batch (errors may come from the open or any batch)."""
    reader = vecferry.open_reader(location, **options)
    try:
        for _ in reader.batches(16):
            pass
    finally:
        reader.close()
