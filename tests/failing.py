"""Helpers of the bad-input tests: run an action that must fail, read a location whole."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import vecferry
from vecferry.errors import VecferryError


def fails(cls: type[VecferryError], action: Callable[[], object]) -> str:
    """Run ``action``, which must raise exactly ``cls``; return the error's text."""
    with pytest.raises(cls) as info:
        action()
    assert type(info.value) is cls
    return str(info.value)


def read_all(location: str, **options: object) -> None:
    """Open ``location`` and read every batch (errors may come from the open or any batch)."""
    reader = vecferry.open_reader(location, **options)
    try:
        for _ in reader.batches(16):
            pass
    finally:
        reader.close()
