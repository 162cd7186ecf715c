"""Shared fixtures, kept generic: the path to the committed samples."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parent.parent / "sample_data"


@pytest.fixture
def samples() -> Path:
    """The committed ``sample_data/`` directory (read only: copy a file before changing it)."""
    return SAMPLES
