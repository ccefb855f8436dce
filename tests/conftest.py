"""Fixtures for every test module; plain helpers live in ``tests/helpers.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import SAMPLE_VIDEOS


@pytest.fixture
def sample_videos() -> Path:
    """The folder of real sample clips that ships with the repository."""
    assert SAMPLE_VIDEOS.is_dir(), f"sample clips missing: {SAMPLE_VIDEOS}"
    return SAMPLE_VIDEOS
